//! Where a field is in a spec's text, so that a rule broken by a spec that parses can be shown
//! at its line and column too (JSON is read as the YAML it also is).

use std::collections::HashMap;

use serde_saphyr::granit_parser::{Event, Parser};

/// One open collection while walking the document.
enum Frame {
    Map {
        key: Option<String>,
        expecting_key: bool,
    },
    Seq {
        index: usize,
    },
}

/// The path of the node about to be read, in the form messages use: `steps[1].name`.
fn path_of(stack: &[Frame]) -> String {
    let mut path = String::new();
    for frame in stack {
        match frame {
            Frame::Map { key: Some(key), .. } => {
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(key);
            }
            Frame::Map { key: None, .. } => {}
            Frame::Seq { index } => path.push_str(&format!("[{index}]")),
        }
    }
    path
}

/// A node of the parent collection is complete: the next one is a key, or the next item.
fn complete(stack: &mut [Frame]) {
    match stack.last_mut() {
        Some(Frame::Map { expecting_key, .. }) => *expecting_key = true,
        Some(Frame::Seq { index }) => *index += 1,
        None => {}
    }
}

/// The line and column (both from 1) of every field and list item of `text`, by path: a field
/// at its key, a list item at its first character. Empty when the text does not parse.
pub(super) fn positions(text: &str) -> HashMap<String, (u64, u64)> {
    let mut positions = HashMap::new();
    let mut stack: Vec<Frame> = Vec::new();
    for event in Parser::new_from_str(text) {
        let Ok((event, span)) = event else {
            return HashMap::new();
        };
        let at = (span.start.line() as u64, span.start.col() as u64 + 1);
        let is_node = matches!(
            event,
            Event::Scalar(..)
                | Event::SequenceStart(..)
                | Event::MappingStart(..)
                | Event::Alias(_)
        );
        if is_node {
            match stack.last_mut() {
                Some(Frame::Map { key, expecting_key }) if *expecting_key => {
                    *expecting_key = false;
                    *key = match &event {
                        Event::Scalar(value, ..) => Some(value.to_string()),
                        _ => Some("?".to_owned()),
                    };
                    positions.entry(path_of(&stack)).or_insert(at);
                    if !matches!(event, Event::Scalar(..) | Event::Alias(_)) {
                        // A complex key: walk it like a value, it is never looked up.
                        stack.push(match event {
                            Event::MappingStart(..) => Frame::Map {
                                key: None,
                                expecting_key: true,
                            },
                            _ => Frame::Seq { index: 0 },
                        });
                    }
                    continue;
                }
                Some(Frame::Seq { .. }) => {
                    positions.entry(path_of(&stack)).or_insert(at);
                }
                _ => {}
            }
        }
        match event {
            Event::Scalar(..) | Event::Alias(_) => complete(&mut stack),
            Event::MappingStart(..) => stack.push(Frame::Map {
                key: None,
                expecting_key: true,
            }),
            Event::SequenceStart(..) => stack.push(Frame::Seq { index: 0 }),
            Event::MappingEnd | Event::SequenceEnd => {
                stack.pop();
                complete(&mut stack);
            }
            _ => {}
        }
    }
    positions
}

/// The position of the field a validation problem starts with (`steps[1].name "s" is used by an
/// earlier step` is at `steps[1].name`), or of the nearest enclosing field that is in the text.
pub(super) fn position_of_problem(
    positions: &HashMap<String, (u64, u64)>,
    problem: &str,
) -> Option<(u64, u64)> {
    let end = problem.find([' ', ':']).unwrap_or(problem.len());
    let mut path = &problem[..end];
    loop {
        if let Some(position) = positions.get(path) {
            return Some(*position);
        }
        let cut = path.rfind(['.', '['])?;
        path = &path[..cut];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_and_items_are_found_in_yaml_and_json() {
        let yaml = "name: x\nenv: {A: b}\nsteps:\n  - name: s\n    run: hi\n  - name: t\n    command: [a, b]\n";
        let positions = positions(yaml);
        assert_eq!(positions["name"], (1, 1));
        assert_eq!(positions["env.A"], (2, 7));
        assert_eq!(positions["steps"], (3, 1));
        assert_eq!(positions["steps[0]"], (4, 5));
        assert_eq!(positions["steps[1].name"], (6, 5));
        assert_eq!(positions["steps[1].command[1]"], (7, 18));
        let json = r#"{"name":"x","steps":[{"name":"s","run":"hi"}]}"#;
        let positions = super::positions(json);
        assert_eq!(positions["steps[0].run"], (1, 34));
    }

    #[test]
    fn a_problem_is_placed_at_its_field_or_the_nearest_enclosing_one() {
        let positions = positions("name: x\nsteps:\n  - name: s\n    run: hi\n");
        assert_eq!(
            position_of_problem(&positions, "steps[0].name \"s\" is used by an earlier step"),
            Some((3, 5))
        );
        assert_eq!(
            position_of_problem(&positions, "steps[0].command must be a non-empty argv list"),
            Some((3, 5))
        );
        assert_eq!(
            position_of_problem(
                &positions,
                "steps[0].env: \"1\" is not a valid variable name"
            ),
            Some((3, 5))
        );
        assert_eq!(
            position_of_problem(&positions, "name \"a b\" must be"),
            Some((1, 1))
        );
        assert_eq!(position_of_problem(&positions, "nothing here"), None);
    }
}
