//! Identity fields (`owner`, `approval.approved_by`, `environment`) compared as people read them.
//!
//! Policy decisions hang on these strings: `prod` needs approval, the approver must not be the
//! owner. A string that *looks* like `prod` but is not (`prod` followed by a zero-width space,
//! `рrod` with a Cyrillic `р`) would slip past every comparison, and `ａｎａ` (full width) would
//! pass as someone other than `ana`. So the spec refuses invisible characters and letters of
//! mixed scripts in these fields ([`check`]), and policies compare them after NFKC normalisation
//! and case folding ([`normalize`]).

use unicode_normalization::UnicodeNormalization;
use unicode_script::{Script, UnicodeScript};

/// The form policies compare: NFKC, case-folded, blanks trimmed. `ＰＲＯＤ ` becomes `prod`.
pub fn normalize(value: &str) -> String {
    let folded: String = value.nfkc().collect::<String>().to_lowercase();
    folded.nfkc().collect::<String>().trim().to_owned()
}

/// Whether two identities are the same person as people would read them.
pub fn same_identity(left: &str, right: &str) -> bool {
    normalize(left) == normalize(right)
}

/// Why `value` cannot be an identity: it holds an invisible or control character, or letters of
/// more than one script. `None` when it is acceptable.
pub fn check(value: &str) -> Option<String> {
    if let Some(c) = value.chars().find(|&c| is_invisible(c)) {
        return Some(format!(
            "contains the invisible or control character U+{:04X}; type the name with visible characters only",
            u32::from(c)
        ));
    }
    let normalized: String = value.nfkc().collect();
    let mut scripts: Vec<Script> = Vec::new();
    for c in normalized.chars().filter(|c| c.is_alphanumeric()) {
        let script = c.script();
        if matches!(script, Script::Common | Script::Inherited | Script::Unknown) {
            continue;
        }
        if !scripts.contains(&script) {
            scripts.push(script);
        }
    }
    if scripts.len() > 1 {
        let names: Vec<&str> = scripts.iter().map(|s| s.full_name()).collect();
        return Some(format!(
            "mixes letters of several scripts ({}), which can imitate another name; use one script",
            names.join(", ")
        ));
    }
    None
}

/// Characters that render as nothing (or steer rendering) and so make two different strings
/// look alike: controls, format characters (zero-width spaces and joiners, bidi controls, the
/// byte-order mark, soft hyphen), variation selectors, fillers and other default-ignorables.
fn is_invisible(c: char) -> bool {
    let code = u32::from(c);
    (c.is_control() && c != ' ' && c != '\t')
        || matches!(
            code,
            0x00AD
                | 0x034F
                | 0x061C
                | 0x115F
                | 0x1160
                | 0x17B4
                | 0x17B5
                | 0x180B..=0x180F
                | 0x200B..=0x200F
                | 0x202A..=0x202E
                | 0x2060..=0x206F
                | 0x3164
                | 0xFE00..=0xFE0F
                | 0xFEFF
                | 0xFFA0
                | 0xFFF0..=0xFFFB
                | 0x1BCA0..=0x1BCA3
                | 0x1D173..=0x1D17A
                | 0xE0000..=0xE0FFF
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn look_alikes_are_refused() {
        assert!(check("prod\u{200b}").is_some());
        assert!(check("\u{200b}").is_some());
        assert!(
            check("\u{0440}rod").is_some(),
            "Cyrillic er among Latin letters"
        );
        assert!(check("pr\u{043e}d").is_some(), "Cyrillic o");
        assert!(check("ana\u{202e}").is_some(), "bidi override");
        assert!(check("team\u{7}ops").is_some(), "control character");
    }

    #[test]
    fn ordinary_names_pass() {
        for name in [
            "ana",
            "Ana Lima",
            "platform-team",
            "ops@example.com",
            "Ярослав",
            "山田",
            "prod",
            "José",
        ] {
            assert_eq!(check(name), None, "{name}");
        }
    }

    #[test]
    fn comparison_is_as_people_read() {
        assert!(same_identity("ａｎａ", "ana"));
        assert!(same_identity(" ANA ", "ana"));
        assert!(!same_identity("ana", "anna"));
        assert_eq!(normalize("ＰＲＯＤ"), "prod");
        assert_eq!(normalize("Production"), "production");
    }
}
