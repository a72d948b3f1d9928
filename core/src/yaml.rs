//! The one reader of Rouse's YAML files (the local file, the standalone event gateway file):
//! typed deserialisation whose error points at one place, `file:line:column: field.path: problem`.

use serde::de::DeserializeOwned;

/// Deserialises `text` into `T`; `origin` names the file in the message.
pub fn from_str<T: DeserializeOwned>(text: &str, origin: &str) -> Result<T, String> {
    let de = serde_yaml::Deserializer::from_str(text);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let at = inner.location().map_or_else(
            || "?".to_string(),
            |l| format!("{}:{}", l.line(), l.column()),
        );
        format!(
            "{origin}:{at}: {path}: {}",
            problem(&inner.to_string(), &path)
        )
    })
}

/// serde_yaml's message without what the prefix already says: it may start with the field path
/// or its parent (`apps[0].x: invalid type…`, `apps[0]: unknown field…`) and end with
/// ` at line L column C`.
fn problem<'a>(message: &'a str, path: &str) -> &'a str {
    let message = message.split(" at line ").next().unwrap_or(message);
    match message.split_once(": ") {
        Some((own, rest)) if !own.is_empty() && !own.contains(' ') && path.starts_with(own) => rest,
        _ => message,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct File {
        apps: Vec<App>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct App {
        name: String,
        #[serde(default)]
        cold_start: BTreeMap<String, u64>,
    }

    #[test]
    fn a_nested_type_error_names_line_column_and_path_once() {
        let text = "apps:\n  - name: a\n    cold_start:\n      hold_timeout_ms: soon\n";
        let e = from_str::<File>(text, "rouse.yaml").expect_err("invalid");
        assert!(
            e.starts_with("rouse.yaml:4:24: apps[0].cold_start.hold_timeout_ms: invalid type"),
            "{e}"
        );
        assert_eq!(e.matches("hold_timeout_ms").count(), 1, "{e}");
        assert!(!e.contains(" at line "), "{e}");
    }

    #[test]
    fn unknown_fields_are_named() {
        let e = from_str::<File>("apps:\n  - name: a\n    nmae: b\n", "f.yaml").expect_err("x");
        assert!(
            e.starts_with("f.yaml:3:5: apps[0].nmae: unknown field `nmae`"),
            "{e}"
        );
        assert_eq!(e.matches("apps[0]").count(), 1, "{e}");
    }
}
