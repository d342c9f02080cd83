//! Loading and validating a definition. A definition is read from a [`Bundle`]: the YAML text and
//! the schema files it names, all as text, so that the exact content can be hashed, stored in the
//! log when a case starts, and loaded again later without touching the file system.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;

use serde_json::Value;
use serde_saphyr::Spanned;
use sha2::{Digest, Sha256};

use crate::definition::{
    Command, Condition, Definition, Effect, EntitySource, NotificationDecl, Operand, Place,
    SchemaRef, WarningKind,
};
use crate::timers::{At, CompiledTimer, Offset, SYSTEM_ROLE};

/// The texts a definition is made of: the YAML file and the files it refers to, by the path
/// written in the definition (relative to the definition's folder).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Bundle {
    /// Where the definition was read from, for messages (e.g. `workflows/x/workflow.yaml`).
    pub origin: String,
    pub text: String,
    #[serde(default)]
    pub files: BTreeMap<String, String>,
}

impl Bundle {
    /// SHA-256 over the definition and its files, each length-prefixed, in path order.
    pub fn content_hash(&self) -> String {
        let mut h = Sha256::new();
        let mut part = |s: &str| {
            h.update((s.len() as u64).to_be_bytes());
            h.update(s.as_bytes());
        };
        part(&self.text);
        for (path, text) in &self.files {
            part(path);
            part(text);
        }
        hex::encode(h.finalize())
    }
}

/// One thing wrong with a definition, with its place when known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub origin: String,
    pub place: Option<Place>,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.place {
            Some(p) => write!(
                f,
                "{}:{}:{}: {}",
                self.origin, p.line, p.column, self.message
            ),
            None => write!(f, "{}: {}", self.origin, self.message),
        }
    }
}

/// Every problem found in a definition.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct Problems(pub Vec<Problem>);

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

/// A validated definition with its compiled schemas.
#[derive(Debug, Clone)]
pub struct Workflow {
    pub definition: Arc<Definition>,
    pub bundle: Arc<Bundle>,
    /// The content hash a case pins.
    pub hash: String,
    pub start_schema: Arc<Value>,
    pub input_schemas: Arc<BTreeMap<String, Value>>,
    /// The timers with their offsets and times of day parsed.
    pub timers: Arc<Vec<CompiledTimer>>,
    /// The start and input schemas compiled once, for every command decided.
    pub(crate) validators: Arc<Validators>,
}

/// Compiled JSON Schemas of a definition (compiling one costs more than deciding a command).
pub(crate) struct Validators {
    pub start: Option<jsonschema::Validator>,
    pub inputs: BTreeMap<String, jsonschema::Validator>,
}

impl fmt::Debug for Validators {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Validators")
            .field("start", &self.start.is_some())
            .field("inputs", &self.inputs.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Workflow {
    pub fn name(&self) -> &str {
        &self.definition.name.value
    }

    pub fn version(&self) -> u32 {
        self.definition.version
    }

    pub fn command(&self, id: &str) -> Option<&Command> {
        self.definition.commands.iter().find(|c| c.id.value == id)
    }

    /// The default value of a parameter, overridden by the case's `parameters` start data.
    pub fn parameter(&self, id: &str, case_data: &Value) -> Option<Value> {
        case_data
            .pointer(&format!("/parameters/{id}"))
            .cloned()
            .or_else(|| {
                self.definition
                    .parameters
                    .iter()
                    .find(|p| p.id.value == id)
                    .map(|p| p.default.clone())
            })
    }
}

/// Parses and validates a bundle; every problem is reported, not just the first.
pub fn load(bundle: Bundle) -> Result<Workflow, Problems> {
    let origin = bundle.origin.clone();
    let definition: Definition = serde_saphyr::from_str(&bundle.text).map_err(|e| {
        let place = e.location().map(|l| Place {
            line: l.line(),
            column: l.column(),
        });
        Problems(vec![Problem {
            origin: origin.clone(),
            place,
            message: strip_location(&first_line(&e.to_string())),
        }])
    })?;
    let mut v = Validator::new(&definition, &origin);
    v.check();
    let start_schema = v.schema("start.schema", &definition.start.schema, &bundle);
    let mut input_schemas = BTreeMap::new();
    for command in &definition.commands {
        let schema = match &command.input {
            Some(s) => v.schema(&format!("command {}", command.id.value), s, &bundle),
            None => Some(serde_json::json!({"type": "object"})),
        };
        if let Some(schema) = schema {
            input_schemas.insert(command.id.value.clone(), schema);
        }
    }
    let timers = v.timers();
    v.templates(&bundle);
    if !v.problems.is_empty() {
        return Err(Problems(v.problems));
    }
    let hash = bundle.content_hash();
    let validators = Validators {
        start: start_schema
            .as_ref()
            .and_then(|s| crate::decide::compile(s).ok()),
        inputs: input_schemas
            .iter()
            .filter_map(|(id, s)| Some((id.clone(), crate::decide::compile(s).ok()?)))
            .collect(),
    };
    Ok(Workflow {
        definition: Arc::new(definition),
        bundle: Arc::new(bundle),
        hash,
        start_schema: Arc::new(start_schema.unwrap_or(Value::Null)),
        input_schemas: Arc::new(input_schemas),
        timers: Arc::new(timers),
        validators: Arc::new(validators),
    })
}

/// The parser's message repeats the place the problem line already starts with.
fn strip_location(text: &str) -> String {
    let text = text.strip_prefix("error: ").unwrap_or(text);
    match text.strip_prefix("line ") {
        Some(rest) => rest
            .split_once(": ")
            .map_or(text, |(_, message)| message)
            .to_owned(),
        None => text.to_owned(),
    }
}

fn first_line(text: &str) -> String {
    text.lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or(text)
        .to_owned()
}

struct Validator<'a> {
    def: &'a Definition,
    origin: &'a str,
    problems: Vec<Problem>,
    stages: BTreeSet<&'a str>,
    roles: BTreeSet<&'a str>,
    events: BTreeSet<&'a str>,
    commands: BTreeSet<&'a str>,
    documents: BTreeSet<&'a str>,
    collections: BTreeMap<&'a str, BTreeSet<&'a str>>,
}

impl<'a> Validator<'a> {
    fn new(def: &'a Definition, origin: &'a str) -> Validator<'a> {
        Validator {
            def,
            origin,
            problems: Vec::new(),
            stages: BTreeSet::new(),
            roles: BTreeSet::new(),
            events: BTreeSet::new(),
            commands: BTreeSet::new(),
            documents: BTreeSet::new(),
            collections: BTreeMap::new(),
        }
    }

    fn problem(&mut self, place: Option<Place>, message: String) {
        self.problems.push(Problem {
            origin: self.origin.to_owned(),
            place,
            message,
        });
    }

    /// Records ids of one kind, reporting duplicates and malformed ids.
    fn declare<'s>(
        &mut self,
        kind: &str,
        ids: impl Iterator<Item = &'s Spanned<String>>,
    ) -> BTreeSet<&'s str> {
        let mut seen = BTreeSet::new();
        for id in ids {
            let valid = !id.value.is_empty()
                && id
                    .value
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
            if !valid {
                self.problem(
                    Some(Place::of(id)),
                    format!(
                        "{kind} id {:?} must be ASCII letters, digits, '_' or '-'",
                        id.value
                    ),
                );
            }
            if !seen.insert(id.value.as_str()) {
                self.problem(
                    Some(Place::of(id)),
                    format!("{kind} {:?} is declared twice", id.value),
                );
            }
        }
        seen
    }

    fn known(&mut self, kind: &str, set: &BTreeSet<&str>, id: &Spanned<String>, expected: &str) {
        if !set.contains(id.value.as_str()) {
            let list: Vec<&str> = set.iter().copied().collect();
            self.problem(
                Some(Place::of(id)),
                format!(
                    "unknown {kind} {:?}; expected {expected}: {}",
                    id.value,
                    list.join(", ")
                ),
            );
        }
    }

    fn stage(&mut self, id: &Spanned<String>) {
        let stages = self.stages.clone();
        self.known("stage", &stages, id, "one of the declared stages");
    }

    fn event(&mut self, id: &Spanned<String>) {
        let events = self.events.clone();
        self.known("event type", &events, id, "one of the declared events");
    }

    fn collection(&mut self, id: &Spanned<String>) -> Option<BTreeSet<&'a str>> {
        let names: BTreeSet<&str> = self.collections.keys().copied().collect();
        self.known(
            "entity collection",
            &names,
            id,
            "one of the declared entities",
        );
        self.collections.get(id.value.as_str()).cloned()
    }

    fn states(&mut self, collection: &Spanned<String>, states: &[&Spanned<String>]) {
        if let Some(known) = self.collection(collection) {
            for s in states {
                self.known(
                    &format!("state of {}", collection.value),
                    &known,
                    s,
                    "one of its states",
                );
            }
        }
    }

    fn check(&mut self) {
        let def = self.def;
        self.stages = self.declare("stage", def.stages.iter().map(|s| &s.id));
        self.roles = self.declare("role", def.roles.iter().map(|r| &r.id));
        self.events = self.declare("event", def.events.iter().map(|e| &e.event_type));
        self.commands = self.declare("command", def.commands.iter().map(|c| &c.id));
        self.documents = self.declare("document", def.documents.iter().map(|d| &d.id));
        self.declare("parameter", def.parameters.iter().map(|p| &p.id));
        self.declare("timer", def.timers.iter().map(|t| &t.id));
        self.declare("notification", def.notifications.iter().map(|n| &n.id));
        let collection_ids = self.declare("entity collection", def.entities.iter().map(|c| &c.id));
        drop(collection_ids);
        for c in &def.entities {
            let states = self.declare(
                &format!("state of {}", c.id.value),
                c.states.iter().map(|s| &s.id),
            );
            if states.is_empty() {
                self.problem(
                    Some(Place::of(&c.id)),
                    format!("entity collection {:?} declares no states", c.id.value),
                );
            }
            self.collections.insert(c.id.value.as_str(), states);
        }
        if def.stages.is_empty() {
            self.problem(None, "a workflow needs at least one stage".to_owned());
        }

        self.event(&def.start.event);
        self.stage(&def.start.stage);
        for source in &def.start.entities {
            self.entity_source(source);
        }
        for command in &def.commands {
            self.command(command);
        }
        for t in &def.transitions {
            self.stage(&t.from);
            self.stage(&t.to);
            self.condition(&t.when);
        }
        for w in &def.warnings {
            if let Some(each) = &w.each {
                self.collection(each);
            }
            for s in &w.stages {
                self.stage(s);
            }
            if let WarningKind::MinDaysBetween {
                days: Operand::Pointer(p),
                ..
            } = &w.rule
            {
                self.pointer(p, None);
            }
        }
        let commands = self.commands.clone();
        for t in &def.timers {
            self.known(
                "command",
                &commands,
                &t.command,
                "one of the declared commands",
            );
            if let Some(each) = &t.each {
                self.collection(each);
            }
            self.pointer(&t.relative_to, Some(&t.id));
            for operand in t.input.values() {
                if let Operand::Pointer(pointer) = operand {
                    self.pointer(pointer, Some(&t.id));
                }
            }
        }
        for d in &def.documents {
            for e in &d.on {
                self.event(e);
            }
        }
        let documents = self.documents.clone();
        for n in &def.notifications {
            for e in &n.on {
                self.event(e);
            }
            for a in &n.attach {
                self.known("document", &documents, a, "one of the declared documents");
                // An attachment is rendered from the notified event: its document must be
                // declared on every event of the notification.
                if let Some(d) = def.documents.iter().find(|d| d.id.value == a.value) {
                    for e in &n.on {
                        if !d.on.iter().any(|o| o.value == e.value) {
                            self.problem(
                                Some(Place::of(a)),
                                format!(
                                    "notification {:?} attaches document {:?}, which is not \
                                     rendered on {} (its events: {})",
                                    n.id.value,
                                    a.value,
                                    e.value,
                                    d.on.iter()
                                        .map(|o| o.value.as_str())
                                        .collect::<Vec<_>>()
                                        .join(", ")
                                ),
                            );
                        }
                    }
                }
            }
            self.notification(n);
            for to in &n.to {
                let known = match to.strip_prefix("collection:") {
                    Some(c) => self.collections.contains_key(c),
                    None => self.roles.contains(to.as_str()),
                };
                if !known {
                    self.problem(
                        Some(Place::of(&n.id)),
                        format!(
                            "notification {:?} goes to {to:?}, which is neither a declared role \
                             nor collection:<declared entity>",
                            n.id.value
                        ),
                    );
                }
            }
        }
    }

    /// The recipient key pointer and the calendar entries of a notification.
    fn notification(&mut self, n: &'a NotificationDecl) {
        let has_collection = n.to.iter().any(|t| t.starts_with("collection:"));
        if let Some(p) = &n.recipient_key
            && !(p.starts_with("/target/") || p.starts_with("/input/"))
        {
            self.problem(
                Some(Place::of(&n.id)),
                format!(
                    "notification {:?}: recipient_key {p:?} must point into the event's target \
                     entity or input (/target/... or /input/...)",
                    n.id.value
                ),
            );
        }
        if (n.recipient_key.is_some() || n.only_acted_on) && !has_collection {
            self.problem(
                Some(Place::of(&n.id)),
                format!(
                    "notification {:?}: recipient_key and only_acted_on apply to collection:<id> \
                     recipients, and it has none",
                    n.id.value
                ),
            );
        }
        let uids = self.declare(
            &format!("calendar entry of notification {}", n.id.value),
            n.calendar.iter().map(|c| &c.uid),
        );
        drop(uids);
        for c in &n.calendar {
            let place = Some(Place::of(&c.uid));
            if let Some(each) = &c.each {
                let states: Vec<&Spanned<String>> = c.states.iter().collect();
                self.states(each, &states);
            } else if !c.states.is_empty() || c.recipient_key.is_some() {
                self.problem(
                    place,
                    format!(
                        "notification {:?}, calendar entry {:?}: states and recipient_key need \
                         each: <collection>",
                        n.id.value, c.uid.value
                    ),
                );
            }
            let pointers = [
                Some(&c.date),
                Some(&c.time),
                c.place.as_ref(),
                c.recipient_key.as_ref(),
            ];
            for p in pointers.into_iter().flatten() {
                if !p.starts_with('/') {
                    self.problem(
                        place,
                        format!(
                            "notification {:?}, calendar entry {:?}: {p:?} is not a JSON pointer \
                             (it must start with '/')",
                            n.id.value, c.uid.value
                        ),
                    );
                }
            }
            if c.minutes == 0 {
                self.problem(
                    place,
                    format!(
                        "notification {:?}, calendar entry {:?}: minutes must be at least 1",
                        n.id.value, c.uid.value
                    ),
                );
            }
            for e in &c.changed_on {
                self.event(e);
            }
            for to in &c.to {
                if !n.to.contains(to) {
                    self.problem(
                        place,
                        format!(
                            "notification {:?}, calendar entry {:?}: {to:?} is not one of the \
                             notification's recipients ({})",
                            n.id.value,
                            c.uid.value,
                            n.to.join(", ")
                        ),
                    );
                }
            }
        }
    }

    fn entity_source(&mut self, source: &EntitySource) {
        self.states(&source.collection, &[&source.state]);
        self.pointer(&source.from, Some(&source.collection));
        self.pointer(&source.key, Some(&source.collection));
    }

    fn pointer(&mut self, pointer: &str, near: Option<&Spanned<String>>) {
        if !pointer.starts_with('/') {
            self.problem(
                near.map(Place::of),
                format!("{pointer:?} is not a JSON pointer (it must start with '/')"),
            );
        }
    }

    fn command(&mut self, command: &Command) {
        let roles = self.roles.clone();
        for r in &command.roles {
            self.known("role", &roles, r, "one of the declared roles");
        }
        if command.stages.is_empty() {
            self.problem(
                Some(Place::of(&command.id)),
                format!("command {:?} runs in no stage", command.id.value),
            );
        }
        for s in &command.stages {
            self.stage(s);
        }
        self.event(&command.emit);
        if let Some(target) = &command.target {
            let states: Vec<&Spanned<String>> = target.states.iter().collect();
            self.states(&target.collection, &states);
            self.pointer(&target.key, Some(&command.id));
        }
        for check in &command.checks {
            self.condition(&check.require);
        }
        for effect in &command.effects {
            self.effect(command, effect);
        }
    }

    fn effect(&mut self, command: &Command, effect: &Effect) {
        if let Some(when) = &effect.when {
            self.condition(when);
        }
        if let Some(stage) = &effect.stage {
            self.stage(stage);
        }
        let touches_target = effect.target_state.is_some() || !effect.set_target.is_empty();
        match (&command.target, touches_target) {
            (None, true) => self.problem(
                Some(Place::of(&command.id)),
                format!(
                    "command {:?} changes its target but declares no target",
                    command.id.value
                ),
            ),
            (Some(target), _) => {
                if let Some(state) = &effect.target_state {
                    self.states(&target.collection, &[state]);
                }
            }
            _ => {}
        }
        for pointer in effect.set_target.values().chain(effect.set_case.values()) {
            self.pointer(pointer, Some(&command.id));
        }
        if let Some(m) = &effect.move_all {
            let mut states: Vec<&Spanned<String>> = m.states.iter().collect();
            states.push(&m.to);
            self.states(&m.collection, &states);
        }
        if let Some(create) = &effect.create {
            self.entity_source(create);
        }
    }

    fn condition(&mut self, condition: &Condition) {
        match condition {
            Condition::Stage(s) => self.stage(s),
            Condition::StageIn(list) => {
                for s in list {
                    self.stage(s);
                }
            }
            Condition::All(list) | Condition::Any(list) => {
                for c in list {
                    self.condition(c);
                }
            }
            Condition::Not(c) => self.condition(c),
            Condition::Every(es) | Condition::Some(es) | Condition::None(es) => {
                let states: Vec<&Spanned<String>> = es.states.iter().collect();
                self.states(&es.collection, &states);
            }
            Condition::Exists(p) => self.pointer(p, None),
            Condition::Compare(c) => {
                for operand in [&c.left, &c.right] {
                    if let Operand::Pointer(p) = operand {
                        self.pointer(p, None);
                    }
                }
            }
            Condition::Each(each) => {
                self.pointer(&each.array, None);
                self.condition(&each.require);
            }
        }
    }

    /// Parses every timer's offset and time of day, and checks that its command lets the
    /// scheduler (role `system`) run it and that the parameters it names exist.
    fn timers(&mut self) -> Vec<CompiledTimer> {
        let def = self.def;
        if def.time_zone.parse::<chrono_tz::Tz>().is_err() {
            self.problem(
                None,
                format!(
                    "time_zone {:?} is not an IANA time zone name (for example Asia/Ho_Chi_Minh)",
                    def.time_zone
                ),
            );
        }
        let mut out = Vec::new();
        for t in &def.timers {
            let place = Some(Place::of(&t.id));
            let offset = match &t.offset {
                None => Offset::default(),
                Some(text) => match Offset::parse(text) {
                    Ok(o) => o,
                    Err(e) => {
                        self.problem(place, format!("timer {:?}: offset: {e}", t.id.value));
                        continue;
                    }
                },
            };
            for name in offset.parameters() {
                let integer = def
                    .parameters
                    .iter()
                    .find(|p| p.id.value == name)
                    .map(|p| p.default.is_i64());
                match integer {
                    None => self.problem(
                        place,
                        format!(
                            "timer {:?}: offset names ${name}, which is not a declared parameter",
                            t.id.value
                        ),
                    ),
                    Some(false) => self.problem(
                        place,
                        format!(
                            "timer {:?}: parameter {name} must have a whole-number default to \
                             be used in an offset",
                            t.id.value
                        ),
                    ),
                    Some(true) => {}
                }
            }
            let at = match t.at.as_deref().map(At::parse).transpose() {
                Ok(at) => at,
                Err(e) => {
                    self.problem(place, format!("timer {:?}: at: {e}", t.id.value));
                    continue;
                }
            };
            if let Some(command) = def.commands.iter().find(|c| c.id.value == t.command.value)
                && !command.roles.iter().any(|r| r.value == SYSTEM_ROLE)
            {
                self.problem(
                    Some(Place::of(&t.command)),
                    format!(
                        "timer {:?} runs command {:?}, whose roles do not include {SYSTEM_ROLE:?} \
                         (the role timers act as)",
                        t.id.value, t.command.value
                    ),
                );
            }
            out.push(CompiledTimer {
                decl: t.clone(),
                offset,
                at,
            });
        }
        out
    }

    /// Every document template and partial must be in the bundle; a document's id pointer must
    /// point into the event's input.
    fn templates(&mut self, bundle: &Bundle) {
        let def = self.def;
        for d in &def.documents {
            if !bundle.files.contains_key(&d.template) {
                self.problem(
                    Some(Place::of(&d.id)),
                    format!(
                        "document {:?}: template file {:?} is missing",
                        d.id.value, d.template
                    ),
                );
            }
            for (what, pointer) in [("key", &d.key), ("date", &d.date)] {
                if let Some(p) = pointer
                    && !p.starts_with("/input/")
                {
                    self.problem(
                        Some(Place::of(&d.id)),
                        format!(
                            "document {:?}: {what} {p:?} must point into the event's input \
                             (/input/...)",
                            d.id.value
                        ),
                    );
                }
            }
        }
        for p in &def.partials {
            if !bundle.files.contains_key(p) {
                self.problem(None, format!("partial template file {p:?} is missing"));
            }
        }
        for n in &def.notifications {
            if !bundle.files.contains_key(&n.template) {
                self.problem(
                    Some(Place::of(&n.id)),
                    format!(
                        "notification {:?}: template file {:?} is missing",
                        n.id.value, n.template
                    ),
                );
            }
        }
    }

    /// Resolves and compiles a schema; `None` (with a problem recorded) when it is unusable.
    fn schema(&mut self, what: &str, schema: &SchemaRef, bundle: &Bundle) -> Option<Value> {
        let value = match schema {
            SchemaRef::Inline(v) => v.clone(),
            SchemaRef::File(path) => {
                let Some(text) = bundle.files.get(path) else {
                    self.problem(None, format!("{what}: schema file {path:?} is missing"));
                    return None;
                };
                match serde_json::from_str(text) {
                    Ok(v) => v,
                    Err(e) => {
                        self.problems.push(Problem {
                            origin: path.clone(),
                            place: Some(Place {
                                line: e.line() as u64,
                                column: e.column() as u64,
                            }),
                            message: format!("{what}: invalid JSON: {e}"),
                        });
                        return None;
                    }
                }
            }
        };
        if let Err(e) = crate::decide::compile(&value) {
            self.problem(None, format!("{what}: invalid JSON Schema: {e}"));
            return None;
        }
        Some(value)
    }
}

/// The schema and template files a definition text names, so a caller can read them into the bundle.
pub fn referenced_files(text: &str) -> Vec<String> {
    let Ok(definition) = serde_saphyr::from_str::<Definition>(text) else {
        return Vec::new();
    };
    let mut files = Vec::new();
    if let SchemaRef::File(p) = &definition.start.schema {
        files.push(p.clone());
    }
    for c in &definition.commands {
        if let Some(SchemaRef::File(p)) = &c.input {
            files.push(p.clone());
        }
    }
    // Templates belong to the definition: a running case renders its documents with the
    // templates it started with.
    files.extend(definition.documents.iter().map(|d| d.template.clone()));
    files.extend(definition.partials.iter().cloned());
    // Notification templates too: a running case's messages keep the wording it started with.
    files.extend(definition.notifications.iter().map(|n| n.template.clone()));
    files.sort();
    files.dedup();
    files
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOTIFYING: &str = "\
name: x
version: 1
label: X
roles: [{id: secretariat, label: Văn phòng}]
start: {event: Started, stage: one, schema: {type: object}, entities: [{collection: units, from: /input/units, key: /code, state: waiting}]}
stages: [{id: one, label: Một}]
entities: [{id: units, label: Đơn vị, states: [{id: waiting, label: Chờ}]}]
events: [{type: Started, label: S}, {type: Reminded, label: R}]
commands: []
documents:
  - {id: letter, label: Công văn, template: templates/letter.hbs, on: [Reminded]}
notifications:
  - id: ok
    on: [Reminded]
    to: [\"collection:units\", secretariat]
    template: notifications/ok.hbs
    attach: [letter]
    recipient_key: /target/code
    calendar:
      - {uid: visit, each: units, states: [waiting], date: /date, time: /time, summary: x, recipient_key: /code, changed_on: [Reminded]}
  - id: broken
    on: [Started]
    to: [secretariat]
    template: notifications/missing.hbs
    attach: [letter]
    recipient_key: input/unit
    calendar:
      - {uid: visit, each: unitz, date: date, time: /time, summary: x, minutes: 0, to: [delegation], changed_on: [Nothing]}
      - {uid: visit, date: /d, time: /t, summary: y, states: [waiting]}
";

    #[test]
    fn notification_templates_are_bundled_and_declarations_checked() {
        let files = referenced_files(NOTIFYING);
        assert!(
            files.contains(&"notifications/ok.hbs".to_owned()),
            "{files:?}"
        );
        assert!(
            files.contains(&"notifications/missing.hbs".to_owned()),
            "{files:?}"
        );
        let bundle = Bundle {
            origin: "x.yaml".into(),
            text: NOTIFYING.into(),
            files: [
                ("templates/letter.hbs".to_owned(), "x".to_owned()),
                ("notifications/ok.hbs".to_owned(), "y".to_owned()),
            ]
            .into_iter()
            .collect(),
        };
        let problems = load(bundle).expect_err("invalid").0;
        let lines: Vec<String> = problems.iter().map(ToString::to_string).collect();
        let has = |prefix: &str, text: &str| {
            assert!(
                lines
                    .iter()
                    .any(|l| l.starts_with(prefix) && l.contains(text)),
                "{prefix} {text:?} not in {lines:#?}"
            );
        };
        has(
            "x.yaml:21:",
            "notification \"broken\": template file \"notifications/missing.hbs\" is missing",
        );
        has(
            "x.yaml:25:",
            "attaches document \"letter\", which is not rendered on Started",
        );
        has("x.yaml:21:", "recipient_key \"input/unit\" must point");
        has("x.yaml:21:", "apply to collection:<id> recipients");
        has("x.yaml:28:", "unknown entity collection \"unitz\"");
        has("x.yaml:28:", "\"date\" is not a JSON pointer");
        has("x.yaml:28:", "minutes must be at least 1");
        has(
            "x.yaml:28:",
            "\"delegation\" is not one of the notification's recipients",
        );
        has("x.yaml:28:", "unknown event type \"Nothing\"");
        has(
            "x.yaml:29:",
            "calendar entry of notification broken \"visit\" is declared twice",
        );
        has("x.yaml:29:", "states and recipient_key need each");
        assert!(
            !lines.iter().any(|l| l.contains("\"ok\"")),
            "the valid notification has no problem: {lines:#?}"
        );
    }
}
