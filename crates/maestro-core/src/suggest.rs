//! "Did you mean": the closest of a few known names to a misspelt one.

/// The candidate closest to `input`, when it is close enough to be what was meant: at most one
/// edit (insertion, deletion, substitution or swap of neighbours) per three characters, and at
/// least one. Case is ignored. Ties go to the earliest candidate.
pub fn did_you_mean<'a>(
    input: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    if input.is_empty() {
        return None;
    }
    let lower = input.to_lowercase();
    let allowed = (lower.chars().count() / 3).max(1);
    let mut best: Option<(usize, &str)> = None;
    for candidate in candidates {
        if candidate == input {
            return None;
        }
        let distance = strsim::damerau_levenshtein(&lower, &candidate.to_lowercase());
        if distance > allowed {
            continue;
        }
        if best.is_none_or(|(shortest, _)| distance < shortest) {
            best = Some((distance, candidate));
        }
    }
    best.map(|(_, candidate)| candidate)
}

#[cfg(test)]
mod tests {
    use super::did_you_mean;

    #[test]
    fn finds_close_names() {
        let fields = ["name", "run", "command", "timeout_seconds", "runtime"];
        assert_eq!(
            did_you_mean("timout_seconds", fields),
            Some("timeout_seconds")
        );
        assert_eq!(did_you_mean("comand", fields), Some("command"));
        assert_eq!(did_you_mean("dokcer", ["docker", "local"]), Some("docker"));
        assert_eq!(did_you_mean("Name", fields), Some("name"));
    }

    #[test]
    fn stays_quiet_when_nothing_is_close() {
        assert_eq!(did_you_mean("xyz", ["name", "run"]), None);
        assert_eq!(did_you_mean("banana", ["docker", "local"]), None);
        assert_eq!(did_you_mean("", ["a"]), None);
        // An exact match is not a suggestion.
        assert_eq!(did_you_mean("run", ["run"]), None);
    }
}
