//! Who a notification goes to. `collection:<id>` names the case's entities (their `email` in the
//! case data), a role names the addresses configured for it and, for a role with a member list in
//! the case data (the delegation's `members`), each member's `email`. Nobody's address is ever
//! made up: a recipient without one is recorded as skipped, with the reason.

use std::collections::{BTreeMap, BTreeSet};

use giamsat_engine::{AppliedEffect, CaseEventData, NotificationDecl, Workflow};
use lettre::message::Mailbox;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// One addressee of a message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recipient {
    pub name: String,
    pub address: String,
    /// The `to` entry that named it: a role, or `collection:<id>`.
    pub to: String,
    /// The entity's key, for a collection recipient.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

impl Recipient {
    pub fn mailbox(&self) -> Result<Mailbox, String> {
        let address = self
            .address
            .parse()
            .map_err(|e| format!("invalid address {:?}: {e}", self.address))?;
        Ok(Mailbox::new(Some(self.name.clone()), address))
    }

    /// What templates see as `recipient`.
    pub fn context(&self) -> Value {
        let collection = self.to.strip_prefix("collection:");
        json!({
            "name": self.name,
            "address": self.address,
            "to": self.to,
            "role": if collection.is_some() { Value::Null } else { json!(self.to) },
            "collection": collection,
            "key": self.key,
            "unit": self.key,
        })
    }
}

/// Someone the notification is for, who got no message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Skipped {
    pub name: String,
    pub to: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    pub reason: String,
}

/// The roles' configured addresses and member lists.
#[derive(Debug, Clone, Default)]
pub struct RoleBook {
    addresses: BTreeMap<String, Vec<Mailbox>>,
    members: BTreeMap<String, String>,
}

impl RoleBook {
    /// Parses every configured address; a bad one is an error naming the role and the address.
    pub fn new(
        roles: &BTreeMap<String, Vec<String>>,
        members: &BTreeMap<String, String>,
    ) -> Result<RoleBook, String> {
        let mut addresses = BTreeMap::new();
        for (role, list) in roles {
            let mut parsed = Vec::new();
            for text in list {
                let mailbox: Mailbox = text
                    .parse()
                    .map_err(|e| format!("roles.{role}: {text:?} is not an address: {e}"))?;
                parsed.push(mailbox);
            }
            addresses.insert(role.clone(), parsed);
        }
        for (role, pointer) in members {
            if !pointer.starts_with('/') {
                return Err(format!(
                    "role-members.{role}: {pointer:?} is not a JSON pointer (it must start with '/')"
                ));
            }
        }
        Ok(RoleBook {
            addresses,
            members: members.clone(),
        })
    }

    /// The recipients of a role: its configured addresses (named `label` when the address has
    /// no name), then its members with an address in `case_data`.
    pub fn recipients(
        &self,
        role: &str,
        label: &str,
        case_data: Option<&Value>,
        out: &mut Vec<Recipient>,
        skipped: &mut Vec<Skipped>,
    ) {
        let before = out.len();
        for mailbox in self.addresses.get(role).into_iter().flatten() {
            out.push(Recipient {
                name: mailbox.name.clone().unwrap_or_else(|| label.to_owned()),
                address: mailbox.email.to_string(),
                to: role.to_owned(),
                key: None,
            });
        }
        if let (Some(pointer), Some(data)) = (self.members.get(role), case_data)
            && let Some(list) = data.pointer(pointer).and_then(Value::as_array)
        {
            for (i, member) in list.iter().enumerate() {
                let name = member["name"]
                    .as_str()
                    .map_or_else(|| format!("{label} {}", i + 1), str::to_owned);
                match member["email"]
                    .as_str()
                    .map(str::trim)
                    .filter(|a| !a.is_empty())
                {
                    Some(address) => match address.parse::<lettre::Address>() {
                        Ok(a) => out.push(Recipient {
                            name,
                            address: a.to_string(),
                            to: role.to_owned(),
                            key: None,
                        }),
                        Err(e) => skipped.push(Skipped {
                            name,
                            to: role.to_owned(),
                            key: None,
                            reason: format!(
                                "invalid e-mail address {address:?} in the case data \
                                 ({pointer}/{i}/email): {e}"
                            ),
                        }),
                    },
                    None => skipped.push(Skipped {
                        name,
                        to: role.to_owned(),
                        key: None,
                        reason: format!(
                            "no e-mail address in the case data ({pointer}/{i}/email is empty)"
                        ),
                    }),
                }
            }
        }
        let configured = self.addresses.get(role).is_some_and(|a| !a.is_empty());
        if out.len() == before && !configured {
            skipped.push(Skipped {
                name: label.to_owned(),
                to: role.to_owned(),
                key: None,
                reason: format!(
                    "no address configured for role {role} (roles.{role} in the notifications \
                     exporter's configuration)"
                ),
            });
        }
    }
}

/// The keys of a collection's entities an event acted on, in the order of its effects.
pub fn acted_on(data: &CaseEventData, collection: &str) -> Vec<String> {
    let mut keys: Vec<String> = Vec::new();
    for effect in &data.effects {
        let key = match effect {
            AppliedEffect::Entity {
                collection: c, key, ..
            }
            | AppliedEffect::Create {
                collection: c, key, ..
            } if c == collection => key,
            _ => continue,
        };
        if !keys.contains(key) {
            keys.push(key.clone());
        }
    }
    keys
}

/// Resolves a `/target/...` or `/input/...` pointer in a template context.
pub fn context_pointer<'v>(context: &'v Value, pointer: &str) -> Option<&'v Value> {
    if let Some(rest) = pointer.strip_prefix("/target") {
        context["target"].pointer(rest)
    } else if let Some(rest) = pointer.strip_prefix("/input") {
        context["event"]["input"].pointer(rest)
    } else {
        context.pointer(pointer)
    }
}

/// Every recipient of a notification for one case event, in the order of `to` (entities in the
/// case's list order), each address once; and who was skipped, with the reason.
pub fn resolve(
    decl: &NotificationDecl,
    workflow: &Workflow,
    context: &Value,
    data: &CaseEventData,
    roles: &RoleBook,
) -> Result<(Vec<Recipient>, Vec<Skipped>), String> {
    let mut out = Vec::new();
    let mut skipped = Vec::new();
    for to in &decl.to {
        if let Some(collection) = to.strip_prefix("collection:") {
            let keys: Vec<String> = if let Some(pointer) = &decl.recipient_key {
                let key = context_pointer(context, pointer)
                    .and_then(Value::as_str)
                    .ok_or_else(|| {
                        format!("recipient_key {pointer} is not a text in the event's context")
                    })?;
                vec![key.to_owned()]
            } else {
                // In the case's list order (units as the start data lists them).
                let all: Vec<String> = context["lists"][collection]
                    .as_array()
                    .map(|list| {
                        list.iter()
                            .filter_map(|e| e["key"].as_str().map(str::to_owned))
                            .collect()
                    })
                    .unwrap_or_default();
                let acted = acted_on(data, collection);
                if !acted.is_empty() || decl.only_acted_on {
                    let mut keys: Vec<String> =
                        all.iter().filter(|k| acted.contains(k)).cloned().collect();
                    keys.extend(acted.into_iter().filter(|k| !all.contains(k)));
                    keys
                } else {
                    all
                }
            };
            for key in keys {
                let entity = &context["entities"][collection][&key];
                let name = ["name", "short_name"]
                    .iter()
                    .find_map(|f| entity[*f].as_str())
                    .unwrap_or(&key)
                    .to_owned();
                if entity.is_null() {
                    skipped.push(Skipped {
                        name,
                        to: to.clone(),
                        key: Some(key.clone()),
                        reason: format!("the case has no {collection} entity {key:?}"),
                    });
                    continue;
                }
                match entity["email"]
                    .as_str()
                    .map(str::trim)
                    .filter(|a| !a.is_empty())
                {
                    Some(address) => match address.parse::<lettre::Address>() {
                        Ok(a) => out.push(Recipient {
                            name,
                            address: a.to_string(),
                            to: to.clone(),
                            key: Some(key),
                        }),
                        Err(e) => skipped.push(Skipped {
                            name,
                            to: to.clone(),
                            key: Some(key.clone()),
                            reason: format!(
                                "invalid e-mail address {address:?} in the case data \
                                 ({collection} {key}: email): {e}"
                            ),
                        }),
                    },
                    None => skipped.push(Skipped {
                        name,
                        to: to.clone(),
                        key: Some(key.clone()),
                        reason: format!(
                            "no e-mail address in the case data ({collection} {key}: email is \
                             empty)"
                        ),
                    }),
                }
            }
        } else {
            let label = workflow
                .definition
                .roles
                .iter()
                .find(|r| r.id.value == *to)
                .map_or(to.as_str(), |r| r.label.as_str());
            roles.recipients(to, label, context.get("data"), &mut out, &mut skipped);
        }
    }
    Ok((dedupe(out), skipped))
}

/// Each address once (the first mention wins: a unit before a role).
pub fn dedupe(list: Vec<Recipient>) -> Vec<Recipient> {
    let mut seen = BTreeSet::new();
    list.into_iter()
        .filter(|r| seen.insert(r.address.to_lowercase()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_take_configured_addresses_and_members_with_an_address() {
        let book = RoleBook::new(
            &BTreeMap::from([(
                "secretariat".to_owned(),
                vec![
                    "Văn phòng HĐND <vanphong@example.org>".to_owned(),
                    "thuky@example.org".to_owned(),
                ],
            )]),
            &BTreeMap::from([("delegation".to_owned(), "/members".to_owned())]),
        )
        .expect("valid");
        let data = json!({"members": [
            {"name": "Trần Bình Trọng", "email": "trong@example.org"},
            {"name": "Nguyễn Thị Huyền"},
            {"name": "Lò Văn A", "email": "not an address"}
        ]});
        let (mut out, mut skipped) = (Vec::new(), Vec::new());
        book.recipients(
            "secretariat",
            "Văn phòng",
            Some(&data),
            &mut out,
            &mut skipped,
        );
        book.recipients(
            "delegation",
            "Đoàn giám sát",
            Some(&data),
            &mut out,
            &mut skipped,
        );
        book.recipients("admin", "Quản trị", Some(&data), &mut out, &mut skipped);
        let names: Vec<(&str, &str)> = out
            .iter()
            .map(|r| (r.name.as_str(), r.address.as_str()))
            .collect();
        assert_eq!(
            names,
            vec![
                ("Văn phòng HĐND", "vanphong@example.org"),
                ("Văn phòng", "thuky@example.org"),
                ("Trần Bình Trọng", "trong@example.org"),
            ]
        );
        let reasons: Vec<&str> = skipped.iter().map(|s| s.reason.as_str()).collect();
        assert_eq!(skipped.len(), 3, "{reasons:?}");
        assert!(reasons[0].contains("/members/1/email"), "{reasons:?}");
        assert!(reasons[1].contains("invalid e-mail address"), "{reasons:?}");
        assert!(reasons[2].contains("roles.admin"), "{reasons:?}");
        let err = RoleBook::new(
            &BTreeMap::from([("secretariat".to_owned(), vec!["nope".to_owned()])]),
            &BTreeMap::new(),
        )
        .expect_err("bad address");
        assert!(
            err.contains("roles.secretariat") && err.contains("nope"),
            "{err}"
        );
    }
}
