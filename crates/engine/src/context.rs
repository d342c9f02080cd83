//! The context document that conditions, effects, warnings and timers address with JSON
//! pointers (`/case/...`, `/input/...`, `/target/...`). Its `case` member is the case data, by
//! far its largest part and the same for every check; it is borrowed from the state instead of
//! copied into a document.

use std::borrow::Cow;

use serde_json::{Map, Value};

/// `{case, ...members}`, read as one JSON document.
#[derive(Debug, Clone)]
pub struct Context<'a> {
    case: Option<&'a Value>,
    members: Map<String, Value>,
}

impl<'a> Context<'a> {
    /// A context whose `case` is `case` and whose other members are `members` (a `case` among
    /// them is ignored).
    pub fn new(case: &'a Value, members: Map<String, Value>) -> Context<'a> {
        Context {
            case: Some(case),
            members,
        }
    }

    /// A context read from a whole document (its `case` member borrowed, the others copied).
    pub fn of(document: &'a Value) -> Context<'a> {
        let members = match document {
            Value::Object(map) => map
                .iter()
                .filter(|(k, _)| k.as_str() != "case")
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            _ => Map::new(),
        };
        Context {
            case: document.get("case"),
            members,
        }
    }

    /// Sets a member other than `case`.
    pub fn set(&mut self, key: &str, value: Value) {
        self.members.insert(key.to_owned(), value);
    }

    /// The members other than `case`.
    pub fn into_members(self) -> Map<String, Value> {
        self.members
    }

    pub fn remove(&mut self, key: &str) {
        self.members.remove(key);
    }

    /// What [`Value::pointer`] gives on the whole document. (The empty pointer, the whole
    /// document, is not supported: definitions' pointers start with `/`.)
    pub fn pointer(&self, pointer: &str) -> Option<&Value> {
        let rest = pointer.strip_prefix('/')?;
        let (head, tail) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        let head: Cow<'_, str> = if head.contains('~') {
            Cow::Owned(head.replace("~1", "/").replace("~0", "~"))
        } else {
            Cow::Borrowed(head)
        };
        let member = if head == "case" {
            self.case?
        } else {
            self.members.get(head.as_ref())?
        };
        member.pointer(tail)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn pointers_read_as_on_the_whole_document() {
        let document = json!({
            "case": {"a": [1, {"b": "x"}], "c/d": 2, "e~f": 3},
            "input": {"unit": "u"},
            "stage": "s",
            "target": null,
        });
        let context = Context::of(&document);
        for p in [
            "/case",
            "/case/a",
            "/case/a/1/b",
            "/case/c~1d",
            "/case/e~0f",
            "/input/unit",
            "/stage",
            "/target",
            "/target/x",
            "/missing",
            "/case/a/7",
            "/",
            "/input/",
            "/ca~0se",
        ] {
            assert_eq!(context.pointer(p), document.pointer(p), "{p}");
        }
    }
}
