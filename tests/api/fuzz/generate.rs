//! Fuzzed requests from a seeded RNG: GraphQL documents built from the schema (right and wrong
//! arguments, variables, fragments, directives, aliases, depth), byte-level mutations of them,
//! batches, and bodies that are no GraphQL request at all. Everything here is a pure function
//! of the seed: the same seed gives the same requests.

use async_graphql::parser::types::{BaseType, Type};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde_json::{json, Map, Value};

use super::schema::{named, Field, Kind, Schema};

/// Where account inputs point: closed ports on loopback, in each protocol's form, so a bind
/// fails at once and nothing leaves the machine. No generated `server` is anything else, and
/// no byte-level mutation is made of a text that names a server.
pub const SAFE_SERVERS: &[&str] = &[
    "127.0.0.1:1",
    "http://127.0.0.1:1",
    "ws://127.0.0.1:1",
    "irc://127.0.0.1:1",
    "ircs://127.0.0.1:1",
    "xmpps://127.0.0.1:1",
];

/// The largest body generated: under the server's 1 MiB limit, whose 413 has its own test.
const MAX_BODY: usize = 900 << 10;

/// Who a request is from.
#[derive(Debug, Clone)]
pub enum Auth {
    Anonymous,
    /// The fuzzing user's bearer token, whatever it is when the request is sent.
    User,
    /// The fuzzing auditor's bearer token.
    Auditor,
    /// This `Authorization` header, verbatim (`{token}` stands for the user's token).
    Header(String),
}

/// One HTTP request to `POST /graphql`.
#[derive(Debug, Clone)]
pub struct Case {
    pub kind: &'static str,
    pub auth: Auth,
    pub content_type: Option<&'static str>,
    pub body: Vec<u8>,
}

/// A value as a GraphQL literal, and (where it can be) as JSON for a variable.
#[derive(Debug, Clone)]
enum Val {
    Null,
    Int(String),
    Float(String),
    Str(String),
    Bool(bool),
    Enum(String),
    List(Vec<Val>),
    Object(Vec<(String, Val)>),
    Var(String),
    /// Text that is no value at all.
    Raw(String),
}

impl Val {
    fn literal(&self, out: &mut String) {
        match self {
            Val::Null => out.push_str("null"),
            Val::Int(text) | Val::Float(text) | Val::Enum(text) | Val::Raw(text) => {
                out.push_str(text)
            }
            Val::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Val::Str(s) => quote(s, out),
            Val::Var(name) => {
                out.push('$');
                out.push_str(name);
            }
            Val::List(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    item.literal(out);
                }
                out.push(']');
            }
            Val::Object(fields) => {
                out.push('{');
                for (i, (name, value)) in fields.iter().enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    out.push_str(name);
                    out.push_str(": ");
                    value.literal(out);
                }
                out.push('}');
            }
        }
    }

    fn json(&self) -> Value {
        let number = |text: &str| {
            text.parse::<i64>()
                .map(Value::from)
                .or_else(|_| text.parse::<u64>().map(Value::from))
                .ok()
                .or_else(|| {
                    text.parse::<f64>()
                        .ok()
                        .and_then(serde_json::Number::from_f64)
                        .map(Value::Number)
                })
                .unwrap_or_else(|| Value::String(text.to_owned()))
        };
        match self {
            Val::Null | Val::Var(_) => Value::Null,
            Val::Int(text) | Val::Float(text) => number(text),
            Val::Str(s) | Val::Enum(s) | Val::Raw(s) => Value::String(s.clone()),
            Val::Bool(b) => Value::Bool(*b),
            Val::List(items) => Value::Array(items.iter().map(Val::json).collect()),
            Val::Object(fields) => Value::Object(
                fields
                    .iter()
                    .map(|(name, value)| (name.clone(), value.json()))
                    .collect(),
            ),
        }
    }
}

/// A GraphQL string literal: a block string when it can be one, else quoted with escapes.
fn quote(s: &str, out: &mut String) {
    let printable = s.chars().all(|c| c >= ' ' || c == '\n' || c == '\t');
    if printable && !s.contains('\\') && !s.contains('"') && s.len() % 7 == 3 {
        out.push_str("\"\"\"");
        out.push_str(s);
        out.push_str("\"\"\"");
        return;
    }
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                out.push_str(&format!("\\u{:04x}", c as u32));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// A fragment of the document being built; its body is made after the operations.
struct Fragment {
    name: String,
    on: String,
    body: Option<String>,
}

/// What one document being built holds besides its text.
#[derive(Default)]
struct Doc {
    /// Declared variables: name, declared type, default.
    declared: Vec<(String, String, Option<String>)>,
    variables: Map<String, Value>,
    fragments: Vec<Fragment>,
    max_depth: usize,
    /// Fields written so far, to bound a document's size.
    fields: usize,
    /// Aliases given so far (strict documents number them).
    aliases: usize,
    /// Writing fragment bodies (after the operations, whose variables are declared).
    in_fragment: bool,
}

pub struct Generator<'s> {
    rng: StdRng,
    schema: &'s Schema,
    objects: Vec<&'s str>,
    types: Vec<&'s str>,
    /// Building a strict document: valid against the schema, odd in its values only.
    strict: bool,
    /// Whether the last document built was strict.
    last_strict: bool,
    /// Building the request of an auditor: mostly the auditors' operations, which refuse
    /// anyone else (and the others mostly for anyone else).
    auditor: bool,
}

const WORDS: &[&str] = &[
    "fuzzer",
    "alice",
    "bob@localhost",
    "@bob:localhost",
    "npub1xyz",
    "Bob",
    "x",
    "a b",
    " trailing ",
    "correct horse battery",
    "'; DROP TABLE events; --",
    "%s%n%x",
    "${jndi:x}",
    "{{7*7}}",
    "../../etc/passwd",
    "<script>alert(1)</script>",
    "\\",
    "\"",
    "\r\n\r\n",
    "null",
    "undefined",
    "NaN",
    "-Infinity",
    "1e309",
    "0x7fffffff",
    "true",
    "__typename",
    "$var",
    "...F",
    "#comment",
];

const UNICODE: &[&str] = &[
    "é",
    "ß",
    "Ω",
    "中文",
    "🙂",
    "👨\u{200d}👩\u{200d}👧",
    "\u{202e}",
    "\u{200b}",
    "\u{feff}",
    "e\u{301}",
    "\u{ffff}",
    "\u{10ffff}",
    "ﬁ",
    "\u{212b}",
    "İ",
    "ǅ",
    "\u{0}",
    "\u{1}",
    "\u{1b}[31m",
    "\u{7f}",
    "\u{85}",
    "\u{2028}",
];

impl<'s> Generator<'s> {
    pub fn new(seed: u64, schema: &'s Schema) -> Self {
        Generator {
            rng: StdRng::seed_from_u64(seed),
            schema,
            objects: schema.object_names(),
            types: schema.type_names(),
            strict: false,
            last_strict: false,
            auditor: false,
        }
    }

    fn chance(&mut self, p: f64) -> bool {
        self.rng.gen_bool(p)
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        items.choose(&mut self.rng).expect("a non-empty list")
    }

    // ----- requests ---------------------------------------------------------------------

    /// The next HTTP request.
    pub fn case(&mut self) -> Case {
        loop {
            let auth = self.auth();
            self.auditor = matches!(auth, Auth::Auditor);
            let roll = self.rng.gen_range(0..100);
            let (kind, content_type, body) = match roll {
                0..=47 => {
                    let body = self.request_body(false);
                    let kind = if self.last_strict {
                        "valid document"
                    } else {
                        "invalid document"
                    };
                    (kind, Some(JSON), body)
                }
                48..=69 => ("mutated document", Some(JSON), self.mutated_request()),
                70..=75 => ("batch", Some(JSON), self.batch()),
                // Few: each runs hundreds of resolvers.
                76..=77 => ("alias flood", Some(JSON), self.alias_flood()),
                78..=83 => ("deep nesting", Some(JSON), self.deep()),
                84..=88 => ("fragments", Some(JSON), self.fragment_torture()),
                89..=94 => ("bad body", Some(JSON), self.bad_body()),
                95..=96 => ("mutated body", Some(JSON), self.mutated_body()),
                _ => {
                    let types = [
                        None,
                        Some("text/plain"),
                        Some("application/graphql"),
                        Some("multipart/form-data; boundary=x"),
                        Some("application/x-www-form-urlencoded"),
                    ];
                    let content_type = *self.pick(&types);
                    let body = if self.chance(0.5) {
                        self.request_body(false)
                    } else {
                        self.bad_body()
                    };
                    ("content type", content_type, body)
                }
            };
            if body.len() <= MAX_BODY {
                return Case {
                    kind,
                    auth,
                    content_type,
                    body,
                };
            }
        }
    }

    fn auth(&mut self) -> Auth {
        match self.rng.gen_range(0..100) {
            0..=54 => Auth::User,
            55..=64 => Auth::Auditor,
            65..=89 => Auth::Anonymous,
            _ => {
                let headers = [
                    "bearer {token}".to_owned(),
                    "Bearer  {token} ".to_owned(),
                    "Bearer {token}x".to_owned(),
                    "Bearer ".to_owned(),
                    "Bearer".to_owned(),
                    "Basic YWxpY2U6cHc=".to_owned(),
                    "{token}".to_owned(),
                    "Bearer forged-token".to_owned(),
                    "Bearer 00000000-0000-0000-0000-000000000000".to_owned(),
                    format!("Bearer {}", "A".repeat(8 << 10)),
                    "Bearer {token}, Bearer {token}".to_owned(),
                ];
                Auth::Header(self.pick(&headers).clone())
            }
        }
    }

    /// `{"query", "variables", "operationName"}` for a generated document, sometimes with odd
    /// members. `without_servers`: no account input anywhere (for byte-level mutation).
    fn request_body(&mut self, without_servers: bool) -> Vec<u8> {
        serde_json::to_vec(&self.request_value(without_servers)).unwrap()
    }

    fn request_value(&mut self, without_servers: bool) -> Value {
        let (query, variables, names) = loop {
            let made = self.document();
            if !without_servers || !mentions_server(made.0.as_bytes(), &made.1) {
                break made;
            }
        };
        let mut request = Map::new();
        request.insert("query".into(), Value::String(query));
        match self.rng.gen_range(0..100) {
            0..=84 => {
                request.insert("variables".into(), Value::Object(variables));
            }
            85..=89 => {}
            90 => {
                request.insert("variables".into(), Value::Null);
            }
            91 => {
                request.insert("variables".into(), json!([1, 2]));
            }
            92 => {
                request.insert("variables".into(), json!("{\"a\": 1}"));
            }
            93 => {
                request.insert("variables".into(), json!(7));
            }
            _ => {
                let mut variables = variables;
                variables.insert("undeclared".into(), json!({"deep": [1, "two", null]}));
                request.insert("variables".into(), Value::Object(variables));
            }
        }
        let operation = match self.rng.gen_range(0..100) {
            0..=59 => None,
            60..=84 => names.choose(&mut self.rng).cloned().map(Value::String),
            85..=89 => Some(json!("Nope")),
            90..=92 => Some(json!("")),
            93..=94 => Some(json!(42)),
            95..=96 => Some(json!(["A"])),
            _ => Some(Value::Null),
        };
        if let Some(operation) = operation {
            request.insert("operationName".into(), operation);
        }
        if self.chance(0.05) {
            let extensions = [
                json!({}),
                json!("x"),
                json!({"persistedQuery": {"version": 1, "sha256Hash": "00"}}),
                json!({"tracing": true, "nested": {"a": [1, {"b": null}]}}),
            ];
            let extensions = self.pick(&extensions).clone();
            request.insert("extensions".into(), extensions);
        }
        Value::Object(request)
    }

    fn batch(&mut self) -> Vec<u8> {
        let size = *self.pick(&[0, 1, 2, 3, 5, 8, 16, 17, 40]);
        let items: Vec<Value> = (0..size)
            .map(|_| match self.rng.gen_range(0..10) {
                0 => json!(null),
                1 => json!(1),
                2 => json!([{"query": "{ me { id } }"}]),
                3 => json!({}),
                _ => self.request_value(false),
            })
            .collect();
        serde_json::to_vec(&items).unwrap()
    }

    // ----- documents ---------------------------------------------------------------------

    /// A document with its variables and the names of its operations. Half are strict: valid
    /// against the schema, with odd values only, so that the resolvers run; the others break
    /// rules of every kind.
    fn document(&mut self) -> (String, Map<String, Value>, Vec<String>) {
        self.strict = self.chance(0.5);
        let mut doc = Doc {
            max_depth: if self.chance(0.1) {
                self.rng.gen_range(6..24)
            } else {
                self.rng.gen_range(1..6)
            },
            ..Doc::default()
        };
        let operations = if !self.strict && self.chance(0.15) {
            self.rng.gen_range(2..4)
        } else {
            1
        };
        let mut text = String::new();
        let mut names = Vec::new();
        for _ in 0..operations {
            doc.declared.clear();
            let (operation, name) = self.operation(&mut doc);
            text.push_str(&operation);
            text.push('\n');
            names.extend(name);
        }
        self.fragments(&mut doc, &mut text);
        if self.chance(0.03) {
            text.push_str("# a comment at the end, with \u{1f600} in it");
        }
        self.last_strict = std::mem::take(&mut self.strict);
        (text, doc.variables, names)
    }

    /// One operation: `query Name($v: T) @dir { ... }`, and its name if it has one.
    fn operation(&mut self, doc: &mut Doc) -> (String, Option<String>) {
        let slot = match self.rng.gen_range(0..100) {
            0..=54 => 0,
            55..=89 => 1,
            // Over HTTP a subscription is refused: strict documents leave them to the sockets.
            _ if self.strict => 0,
            _ => 2,
        };
        let root = self.schema.roots[slot].clone();
        let keyword = ["query", "mutation", "subscription"][slot];
        let name = match self.rng.gen_range(0..10) {
            0..=4 => None,
            5..=8 => Some(format!("Op{}", self.rng.gen_range(0..4))),
            _ if self.strict => Some("Named".to_owned()),
            _ => Some(
                self.pick(&["query", "Query", "__op", "ÄÖ", "_"])
                    .to_string(),
            ),
        };
        let mut selection = String::new();
        let fields = self.schema.fields(&root).to_vec();
        let count = match self.rng.gen_range(0..10) {
            0..=6 => 1,
            7..=8 => self.rng.gen_range(2..5),
            _ if self.strict => 1,
            _ => 0,
        };
        let mut names_used = Vec::new();
        for _ in 0..count {
            let field = self.root_field(&fields, slot);
            self.field(&field, doc, 1, &mut names_used, &mut selection);
        }
        if count == 0 || self.chance(0.05) {
            self.odd_selection(&root, doc, 1, &mut selection);
        }
        let mut text = String::new();
        // The shorthand `{ ... }` is a query with nothing else said.
        let shorthand = slot == 0 && name.is_none() && doc.declared.is_empty() && self.chance(0.5);
        if !shorthand {
            text.push_str(keyword);
            if let Some(name) = &name {
                text.push(' ');
                text.push_str(name);
            }
            let unused = !self.strict && self.chance(0.03);
            if !doc.declared.is_empty() || unused {
                text.push('(');
                let declared = doc.declared.clone();
                for (i, (var, ty, default)) in declared.iter().enumerate() {
                    if i > 0 {
                        text.push_str(", ");
                    }
                    text.push_str(&format!("${var}: {ty}"));
                    if let Some(default) = default {
                        text.push_str(" = ");
                        text.push_str(default);
                    }
                }
                if unused {
                    text.push_str(", $unused: [String!]! = [\"x\"]");
                }
                text.push(')');
            }
            if !self.strict && self.chance(0.03) {
                let directive = self.directive(doc);
                text.push_str(&directive);
            }
        }
        text.push_str(" {");
        text.push_str(&selection);
        text.push_str(" }");
        (text, name)
    }

    /// A root field, hashing ones (login, registration: a slow password hash each) less often.
    fn root_field(&mut self, fields: &[Field], slot: usize) -> Field {
        loop {
            let field = self.pick(fields).clone();
            let costly = matches!(
                field.name.as_str(),
                "register" | "login" | "auditorLogin" | "logout" | "auditorLogout"
            );
            let audit = field.name.starts_with("audit");
            let for_someone_else = audit != self.auditor && self.chance(0.8);
            if (slot != 1 || !costly || self.chance(0.3)) && !for_someone_else {
                return field;
            }
        }
    }

    /// ` alias: field(args) @dir { selection }` of a field of an object type. Strict: a field
    /// already selected in this set (`names_used`) gets an alias of its own, as its arguments
    /// may differ.
    fn field(
        &mut self,
        field: &Field,
        doc: &mut Doc,
        depth: usize,
        names_used: &mut Vec<String>,
        out: &mut String,
    ) {
        doc.fields += 1;
        out.push(' ');
        let again = names_used.contains(&field.name);
        if self.strict {
            if again || self.chance(0.12) {
                doc.aliases += 1;
                out.push_str(&format!("a{}: ", doc.aliases));
            }
        } else if self.chance(0.12) {
            let alias = match self.rng.gen_range(0..4) {
                0 => "__typename".to_owned(),
                1 => "me".to_owned(),
                _ => format!("a{}", self.rng.gen_range(0..3)),
            };
            out.push_str(&alias);
            out.push_str(": ");
        }
        names_used.push(field.name.clone());
        out.push_str(&field.name);
        let arguments = self.arguments(field, doc);
        out.push_str(&arguments);
        if self.chance(0.06) {
            let directive = self.directive(doc);
            out.push_str(&directive);
        }
        let type_name = named(&field.ty).to_owned();
        match self.schema.types.get(&type_name) {
            Some(Kind::Object(_)) => {
                if !self.strict && self.chance(0.02) {
                    return; // an object without a selection
                }
                out.push_str(" {");
                if depth >= doc.max_depth || doc.fields > 400 {
                    out.push_str(" __typename");
                } else {
                    self.selection(&type_name, doc, depth + 1, out);
                }
                out.push_str(" }");
            }
            _ => {
                if !self.strict && self.chance(0.02) {
                    out.push_str(" { id }"); // a selection on a leaf
                }
            }
        }
    }

    /// The fields selected on an object type.
    fn selection(&mut self, type_name: &str, doc: &mut Doc, depth: usize, out: &mut String) {
        let fields = self.schema.fields(type_name).to_vec();
        if fields.is_empty() {
            out.push_str(" __typename"); // an unknown type, or no object
            return;
        }
        let count = match self.rng.gen_range(0..10) {
            0..=5 => self.rng.gen_range(1..=fields.len().min(3)),
            6..=8 => fields.len(),
            _ if self.strict => 1,
            _ => 0,
        };
        let mut names_used = Vec::new();
        for _ in 0..count {
            let field = self.pick(&fields).clone();
            self.field(&field, doc, depth, &mut names_used, out);
        }
        if count == 0 || self.chance(0.15) {
            self.odd_selection(type_name, doc, depth, out);
        }
    }

    /// `__typename`, an unknown field, an inline fragment or a fragment spread (strict: only
    /// valid ones).
    fn odd_selection(&mut self, type_name: &str, doc: &mut Doc, depth: usize, out: &mut String) {
        let roll = self.rng.gen_range(0..10);
        match roll {
            0..=2 => out.push_str(" __typename"),
            3 if self.strict => out.push_str(" __typename"),
            3 => out.push_str(" nope"),
            4 if !self.strict => out.push_str(" nope(x: 1) { id }"),
            4..=6 => {
                let on = if self.strict || self.chance(0.7) {
                    type_name.to_owned()
                } else if self.chance(0.8) {
                    self.pick(&self.objects.clone()).to_string()
                } else {
                    "Nope".to_owned()
                };
                out.push_str(" ... on ");
                out.push_str(&on);
                if self.chance(0.2) {
                    let directive = self.directive(doc);
                    out.push_str(&directive);
                }
                out.push_str(" {");
                if depth < doc.max_depth && doc.fields < 400 {
                    self.selection(&on, doc, depth + 1, out);
                } else {
                    out.push_str(" __typename");
                }
                out.push_str(" }");
            }
            7 => {
                let directive = self.directive(doc);
                out.push_str(" ...");
                out.push_str(&directive);
                out.push_str(" { __typename }");
            }
            _ if self.strict && (doc.in_fragment || doc.fragments.len() >= 6) => {
                out.push_str(" __typename")
            }
            _ => {
                let name = self.spread(type_name, doc);
                out.push_str(" ...");
                out.push_str(&name);
                if self.chance(0.2) {
                    let directive = self.directive(doc);
                    out.push_str(&directive);
                }
            }
        }
    }

    /// The name of a fragment to spread on `type_name`: one there already (which may be the
    /// one being built: a cycle), a new one, an unknown one, or one on another type. Strict:
    /// a new one, whose body spreads none.
    fn spread(&mut self, type_name: &str, doc: &mut Doc) -> String {
        let same: Vec<String> = doc
            .fragments
            .iter()
            .filter(|f| f.on == type_name)
            .map(|f| f.name.clone())
            .collect();
        let roll = if self.strict {
            6
        } else {
            self.rng.gen_range(0..10)
        };
        match roll {
            0..=3 if !same.is_empty() => self.pick(&same).clone(),
            0..=6 if doc.fragments.len() < 6 => {
                let name = format!("F{}", doc.fragments.len());
                doc.fragments.push(Fragment {
                    name: name.clone(),
                    on: type_name.to_owned(),
                    body: None,
                });
                name
            }
            7 if !doc.fragments.is_empty() => {
                let index = self.rng.gen_range(0..doc.fragments.len());
                doc.fragments[index].name.clone()
            }
            _ => "Missing".to_owned(),
        }
    }

    /// The bodies of the fragments spread so far (which may spread more), then a few odd ones.
    fn fragments(&mut self, doc: &mut Doc, text: &mut String) {
        doc.in_fragment = true;
        while let Some(index) = doc.fragments.iter().position(|f| f.body.is_none()) {
            let on = doc.fragments[index].on.clone();
            let mut body = String::new();
            doc.max_depth = doc.max_depth.min(3);
            self.selection(&on, doc, 1, &mut body);
            doc.fragments[index].body = Some(body);
        }
        for fragment in &doc.fragments {
            text.push_str(&format!(
                "fragment {} on {} {{{} }}\n",
                fragment.name,
                fragment.on,
                fragment.body.as_deref().unwrap_or_default()
            ));
        }
        if self.strict {
            return;
        }
        match self.rng.gen_range(0..40) {
            0 => text.push_str("fragment Unused on Query { me { id } }\n"),
            1 => text.push_str("fragment F0 on Query { __typename }\n"),
            2 => text.push_str("fragment OnScalar on String { length }\n"),
            3 => text.push_str("fragment Loop on Query { ...Loop }\n"),
            _ => {}
        }
    }

    /// ` @include(...)`, ` @skip(...)` and odder directives, with odd arguments (strict: a
    /// Boolean, or a Boolean variable).
    fn directive(&mut self, doc: &mut Doc) -> String {
        if self.strict {
            let name = *self.pick(&["include", "skip"]);
            if self.chance(0.7) {
                return format!(" @{name}(if: {})", self.chance(0.5));
            }
            let var = format!("d{}", doc.declared.len());
            doc.declared.push((var.clone(), "Boolean!".into(), None));
            doc.variables.insert(var.clone(), json!(self.chance(0.5)));
            return format!(" @{name}(if: ${var})");
        }
        let name = *self.pick(&[
            "include",
            "include",
            "skip",
            "skip",
            "deprecated",
            "specifiedBy",
            "nope",
        ]);
        let argument = match self.rng.gen_range(0..12) {
            0..=3 => format!("(if: {})", self.chance(0.5)),
            4 => String::new(),
            5 => "(if: \"yes\")".into(),
            6 => "(if: 1)".into(),
            7 => "(if: null)".into(),
            8 => "(if: true, if: false)".into(),
            9 => "(unless: true)".into(),
            10 => {
                let var = format!("d{}", doc.declared.len());
                let ty = *self.pick(&["Boolean!", "Boolean", "String", "[Boolean!]"]);
                doc.declared.push((var.clone(), ty.to_owned(), None));
                let value = self
                    .pick(&[
                        json!(true),
                        json!(false),
                        json!(null),
                        json!("true"),
                        json!(0),
                    ])
                    .clone();
                doc.variables.insert(var.clone(), value);
                format!("(if: ${var})")
            }
            _ => "(if: $undeclared)".into(),
        };
        let repeat = if self.chance(0.1) {
            self.rng.gen_range(2..5)
        } else {
            1
        };
        format!(" @{name}{argument}").repeat(repeat)
    }

    /// `(name: value, ...)` for a field: each argument a literal, a variable (declared with
    /// its type or another), missing, or of the wrong type; sometimes unknown ones. Strict:
    /// right types only, every required argument given.
    fn arguments(&mut self, field: &Field, doc: &mut Doc) -> String {
        let mut parts = Vec::new();
        for arg in &field.args {
            let required = !arg.ty.nullable;
            let roll = self.rng.gen_range(0..100);
            let left_out = match (self.strict, required) {
                (true, true) => 0,
                (false, true) => 3,
                (_, false) => 30,
            };
            if roll < left_out {
                continue;
            }
            let wrong = !self.strict && roll >= 88;
            let value = if wrong {
                self.wrong_value(&arg.ty, &arg.name)
            } else {
                self.value(&arg.ty, &arg.name, 0)
            };
            // A variable inside a fragment is declared by no operation: strict leaves it out.
            let text = if self.chance(0.3) && !(self.strict && doc.in_fragment) {
                self.variable(&arg.ty, &arg.name, value, doc)
            } else {
                let mut text = String::new();
                value.literal(&mut text);
                text
            };
            parts.push(format!("{}: {}", arg.name, text));
        }
        if !self.strict {
            if self.chance(0.04) {
                parts.push("unknown: 1".into());
            }
            if !parts.is_empty() && self.chance(0.03) {
                let again = self.pick(&parts).clone();
                if !again.starts_with("account") {
                    parts.push(again); // the same argument twice
                }
            }
        }
        if self.chance(0.05) {
            parts.shuffle(&mut self.rng);
        }
        if parts.is_empty() {
            return if !self.strict && self.chance(0.03) {
                "()".into()
            } else {
                String::new()
            };
        }
        format!("({})", parts.join(", "))
    }

    /// `$vN`, declared with the argument's type (mostly) and given `value` (mostly; strict:
    /// always).
    fn variable(&mut self, ty: &Type, hint: &str, value: Val, doc: &mut Doc) -> String {
        let var = format!("v{}", doc.declared.len());
        let declared = match self.rng.gen_range(0..100) {
            _ if self.strict => Some(ty.to_string()),
            0..=79 => Some(ty.to_string()),
            80..=84 => Some(relax(ty)),
            85..=89 => {
                let other = self.pick(&self.types.clone()).to_string();
                Some(if self.chance(0.5) {
                    format!("{other}!")
                } else {
                    other
                })
            }
            90..=91 => Some(format!("[{ty}]")),
            92..=93 => Some("Nope".into()),
            94 => Some("Int!!".into()),
            _ => None, // used, never declared
        };
        if let Some(declared) = declared {
            let default = if !self.strict && self.chance(0.05) {
                let mut text = String::new();
                self.value(ty, hint, 0).literal(&mut text);
                Some(text)
            } else {
                None
            };
            doc.declared.push((var.clone(), declared, default));
        }
        match self.rng.gen_range(0..100) {
            _ if self.strict => {
                doc.variables.insert(var.clone(), value.json());
            }
            0..=89 => {
                doc.variables.insert(var.clone(), value.json());
            }
            90..=94 => {} // declared, no value given
            _ => {
                doc.variables
                    .insert(var.clone(), self.wrong_value(ty, hint).json());
            }
        }
        format!("${var}")
    }

    // ----- values ------------------------------------------------------------------------

    /// A value of the right type (edge cases included).
    fn value(&mut self, ty: &Type, hint: &str, depth: usize) -> Val {
        if ty.nullable && self.chance(0.1) {
            return Val::Null;
        }
        match &ty.base {
            BaseType::List(inner) => {
                if self.chance(0.05) {
                    return self.value(inner, hint, depth + 1); // coerced to a list of one
                }
                let length = match self.rng.gen_range(0..100) {
                    0..=19 => 0,
                    20..=89 => self.rng.gen_range(1..5),
                    90..=96 => *self.pick(&[16, 17, 32, 33, 255, 256, 257]),
                    _ => *self.pick(&[1000, 5000]),
                };
                Val::List(
                    (0..length)
                        .map(|_| self.value(inner, hint, depth + 1))
                        .collect(),
                )
            }
            BaseType::Named(name) => self.named_value(name.as_str(), hint, depth),
        }
    }

    fn named_value(&mut self, type_name: &str, hint: &str, depth: usize) -> Val {
        match type_name {
            "Int" => self.int(),
            "Float" => self.float(),
            "Boolean" => Val::Bool(self.chance(0.5)),
            "ID" => self.id(),
            "DateTime" => Val::Str(self.date()),
            "String" => Val::Str(self.string(hint)),
            "JSON" => Val::Object(vec![("a".into(), Val::Int("1".into()))]),
            other => match self.schema.types.get(other).cloned() {
                Some(Kind::Enum(values)) => {
                    if self.strict || self.chance(0.9) {
                        Val::Enum(self.pick(&values).clone())
                    } else {
                        Val::Enum(
                            self.pick(&["xmpp", "SMTP", "ONLINE2", "_", "true", "null"])
                                .to_string(),
                        )
                    }
                }
                Some(Kind::Input(fields)) => {
                    let mut object = Vec::new();
                    for field in &fields {
                        let odd = !self.strict && field.name != "server";
                        if odd && self.chance(0.04) {
                            continue; // a field left out
                        }
                        let value = if odd && self.chance(0.04) {
                            self.wrong_value(&field.ty, &field.name)
                        } else if depth > 8 {
                            Val::Null
                        } else {
                            self.value(&field.ty, &field.name, depth + 1)
                        };
                        object.push((field.name.clone(), value));
                    }
                    if !self.strict && self.chance(0.04) {
                        object.push(("extra".into(), Val::Int("1".into())));
                    }
                    if self.chance(0.05) {
                        object.shuffle(&mut self.rng);
                    }
                    Val::Object(object)
                }
                _ => Val::Str(self.string(hint)),
            },
        }
    }

    /// A value of another type than `ty` (or none at all). Never a string for a `server`.
    fn wrong_value(&mut self, ty: &Type, hint: &str) -> Val {
        loop {
            let value = match self.rng.gen_range(0..14) {
                0 => Val::Str(self.string(hint)),
                1 => self.int(),
                2 => self.float(),
                3 => Val::Bool(self.chance(0.5)),
                4 => Val::Null,
                5 => Val::Enum("XMPP".into()),
                6 => Val::List(vec![self.value(ty, hint, 3)]),
                7 => Val::List(vec![Val::List(vec![Val::Int("1".into())])]),
                8 => Val::Object(vec![("a".into(), Val::Int("1".into()))]),
                9 => Val::Object(Vec::new()),
                10 => Val::Var("undeclared".into()),
                11 => Val::Str(self.date()),
                12 => Val::Str(self.id_text()),
                _ => Val::Raw(
                    self.pick(&[
                        "$",
                        "@",
                        "...",
                        "\"unterminated",
                        "{",
                        ")",
                        "1.",
                        "0x10",
                        ".5",
                        "01",
                        "true1",
                        "NULL",
                        "-",
                        "1e",
                        "\"\\uZZZZ\"",
                        "\"\\u{1F600}\"",
                        "[1,",
                        "é",
                    ])
                    .to_string(),
                ),
            };
            let names_a_server = matches!(value, Val::Str(_) | Val::Raw(_) | Val::List(_));
            if hint != "server" || !names_a_server {
                return value;
            }
        }
    }

    fn int(&mut self) -> Val {
        if self.chance(0.4) {
            return Val::Int(self.rng.gen_range(-300..300).to_string());
        }
        let edges = [
            "0",
            "-0",
            "1",
            "-1",
            "50",
            "99",
            "100",
            "101",
            "200",
            "201",
            "500",
            "501",
            "2147483647",
            "-2147483648",
            "2147483648",
            "-2147483649",
            "9223372036854775807",
            "-9223372036854775808",
            "9223372036854775808",
            "18446744073709551616",
            "100000000000000000000000000000000000000000",
        ];
        // Strict: within GraphQL's 32 bits.
        let edges = if self.strict {
            &edges[..14]
        } else {
            &edges[..]
        };
        Val::Int(self.pick(edges).to_string())
    }

    fn float(&mut self) -> Val {
        let floats = [
            "1.5", "-0.0", "0.0", "2.0", "50.0", "1e3", "1e308", "1e309", "-1e309", "4.9e-324",
            "1e-400", "0.1",
        ];
        Val::Float(self.pick(&floats).to_string())
    }

    fn id(&mut self) -> Val {
        match self.rng.gen_range(0..10) {
            0 => self.int(),
            _ => Val::Str(self.id_text()),
        }
    }

    fn id_text(&mut self) -> String {
        let uuid = uuid::Builder::from_random_bytes(self.rng.gen()).into_uuid();
        match self.rng.gen_range(0..20) {
            0..=7 => uuid.to_string(),
            8 => uuid.to_string().to_uppercase(),
            9 => uuid.simple().to_string(),
            10 => uuid.braced().to_string(),
            11 => uuid.urn().to_string(),
            12 => uuid::Uuid::nil().to_string(),
            13 => uuid::Uuid::max().to_string(),
            14 => self.rng.gen_range(0..60).to_string(),
            15 => self
                .pick(&[
                    "-1",
                    "0",
                    "9223372036854775807",
                    "9223372036854775808",
                    "1e3",
                    "0x10",
                    " 1",
                ])
                .to_string(),
            16 => format!("{}\u{0}", uuid),
            17 => uuid.to_string()[..20].to_owned(),
            _ => self.string("id"),
        }
    }

    /// An RFC 3339 date-time, valid or nearly so.
    fn date(&mut self) -> String {
        if self.strict {
            if self.chance(0.3) {
                return self
                    .pick(&[
                        "0000-01-01T00:00:00Z",
                        "0000-01-01T00:00:00+23:59",
                        "9999-12-31T23:59:59.999999999Z",
                        "9999-12-31T23:59:59-23:59",
                        "1970-01-01T00:00:00Z",
                        "2016-12-31T23:59:60Z",
                        "2024-02-29T12:00:00+01:00",
                    ])
                    .to_string();
            }
            let year = if self.chance(0.7) {
                self.rng.gen_range(1990..2100)
            } else {
                self.rng.gen_range(0..10000)
            };
            let zone = *self.pick(&["Z", "+00:00", "-00:00", "+14:00", "-12:00", "+23:59"]);
            let fraction = *self.pick(&["", ".5", ".123456", ".123456789"]);
            return format!(
                "{year:04}-{:02}-{:02}T{:02}:{:02}:{:02}{fraction}{zone}",
                self.rng.gen_range(1..=12),
                self.rng.gen_range(1..=28),
                self.rng.gen_range(0..24),
                self.rng.gen_range(0..60),
                self.rng.gen_range(0..60),
            );
        }
        if self.chance(0.3) {
            return self
                .pick(&[
                    "0000-01-01T00:00:00Z",
                    "0001-01-01T00:00:00Z",
                    "9999-12-31T23:59:59.999999999Z",
                    "9999-12-31T23:59:59-23:59",
                    "0000-01-01T00:00:00+23:59",
                    "1970-01-01T00:00:00Z",
                    "2016-12-31T23:59:60Z",
                    "2024-02-29T12:00:00+01:00",
                    "2023-02-29T12:00:00Z",
                    "2024-13-01T00:00:00Z",
                    "2024-01-01",
                    "2024-01-01T00:00:00",
                    "2024-01-01 00:00:00Z",
                    "+275760-09-13T00:00:00Z",
                    "-000001-01-01T00:00:00Z",
                    "now",
                    "",
                    "1700000000",
                    "2024-01-01T00:00:00.123456789123Z",
                ])
                .to_string();
        }
        let year = if self.chance(0.7) {
            self.rng.gen_range(1990..2100)
        } else {
            self.rng.gen_range(0..10000)
        };
        let zones = [
            "Z", "+00:00", "-00:00", "+14:00", "-12:00", "+23:59", "+24:00", "z",
        ];
        let fractions = ["", ".5", ".123456", ".123456789"];
        format!(
            "{year:04}-{:02}-{:02}T{:02}:{:02}:{:02}{}{}",
            self.rng.gen_range(1..=13),
            self.rng.gen_range(1..=32),
            self.rng.gen_range(0..=24),
            self.rng.gen_range(0..=60),
            self.rng.gen_range(0..=60),
            self.pick(&fractions),
            self.pick(&zones),
        )
    }

    /// A string for the argument or input field named `hint`.
    fn string(&mut self, hint: &str) -> String {
        match hint {
            "server" => return self.pick(SAFE_SERVERS).to_string(),
            "userName" | "name" if self.chance(0.4) => {
                let length = self.rng.gen_range(1..40);
                return (0..length)
                    .map(|_| *self.pick(&['a', 'b', 'z', '0', '9', '_', '-', '.', 'é', ' ']))
                    .collect();
            }
            "password" | "secret" if self.chance(0.5) => {
                return self
                    .pick(&["correct horse battery", "short", "", "p\u{0}ssword123"])
                    .to_string()
            }
            "handle" if self.chance(0.5) => {
                return self
                    .pick(&[
                        "alice@localhost",
                        "@alice:localhost",
                        "fuzz",
                        "npub1sg6plzptd64u62a878hep2kev88swjh3tw00gjsfl8f237lmu63q0uf63m",
                        "0000000000000000000000000000000000000000000000000000000000000000",
                        "@",
                        "a@b@c",
                    ])
                    .to_string()
            }
            _ => {}
        }
        match self.rng.gen_range(0..100) {
            0..=9 => String::new(),
            10..=39 => self.pick(WORDS).to_string(),
            40..=54 => {
                let length = self.rng.gen_range(1..40);
                (0..length)
                    .map(|_| self.rng.gen_range(0x20u8..0x7f) as char)
                    .collect()
            }
            55..=74 => {
                let length = self.rng.gen_range(1..20);
                (0..length).map(|_| *self.pick(UNICODE)).collect()
            }
            75..=84 => {
                let mut s = self.pick(WORDS).to_string();
                s.insert(0, '\u{0}');
                s.push('\u{0}');
                s
            }
            85..=89 => self.id_text(),
            90..=94 => self.date(),
            _ => {
                // Long: up to 64 KiB.
                let bytes = *self.pick(&[257, 1 << 10, 8 << 10, 64 << 10]);
                let unit = *self.pick(&["a", "é", "🙂", "ab\u{0}", "\\\""]);
                let mut s = unit.repeat(bytes / unit.len());
                s.truncate(bytes - bytes % unit.len());
                s
            }
        }
    }

    // ----- special documents ---------------------------------------------------------------

    /// Hundreds or thousands of aliases of one root field.
    fn alias_flood(&mut self) -> Vec<u8> {
        let field = *self.pick(&[
            "me { id userName }",
            "me { id }",
            "matchPolicy",
            "sessions { id current }",
            "accounts { id }",
            "contacts { asOf }",
            "loginReport { loginId }",
            "conversations { unread }",
            "history(first: 1) { entries { id } }",
            "__typename",
            "__schema { queryType { name } }",
        ]);
        let count = *self.pick(&[100, 200, 500, 999, 1000, 2000, 5000]);
        let same = self.chance(0.1);
        let mut query = String::from("{");
        for i in 0..count {
            if same {
                query.push_str(&format!(" a: {field}"));
            } else {
                query.push_str(&format!(" a{i}: {field}"));
            }
        }
        query.push_str(" }");
        serde_json::to_vec(&json!({ "query": query })).unwrap()
    }

    /// Nesting to and past every depth limit: selections, values, fragments, JSON.
    fn deep(&mut self) -> Vec<u8> {
        let n: usize = *self.pick(&[
            10, 15, 16, 17, 31, 32, 33, 63, 64, 65, 100, 1000, 10_000, 100_000,
        ]);
        let query = match self.rng.gen_range(0..8) {
            0 => {
                let mut q = String::from("{ __schema { types { fields { type {");
                q.push_str(&" ofType {".repeat(n));
                q.push_str(" name");
                q.push_str(&" }".repeat(n));
                q.push_str(" } } } } }");
                q
            }
            1 => format!("{}{}", "{ a".repeat(n), " }".repeat(n)),
            2 => "{ a".repeat(n),
            3 => format!(
                "{{ conversation(with: {}\"x\"{}) {{ hasMore }} }}",
                "[".repeat(n),
                "]".repeat(n)
            ),
            4 => format!(
                "mutation {{ bindAccount(account: {}1{}) {{ rosterSize }} }}",
                "{a: ".repeat(n),
                "}".repeat(n)
            ),
            5 => format!(
                "{{{} __typename{} }}",
                " ... on Query {".repeat(n),
                " }".repeat(n)
            ),
            6 => format!(
                "{{ me {{ id{} }} }}",
                " @skip(if: false)".repeat(n.min(20_000))
            ),
            _ => {
                // A variable nested n deep, in JSON.
                let variables = format!("{}1{}", "[".repeat(n), "]".repeat(n));
                return format!(
                    "{{\"query\": \"query($v: [ID!]) {{ conversation(with: \\\"x\\\", after: $v) {{ hasMore }} }}\", \"variables\": {{\"v\": {variables}}}}}"
                )
                .into_bytes();
            }
        };
        serde_json::to_vec(&json!({ "query": query })).unwrap()
    }

    /// Fragment cycles, self-spreads, and fan-outs that grow exponentially when expanded.
    fn fragment_torture(&mut self) -> Vec<u8> {
        let query = match self.rng.gen_range(0..5) {
            0 => "{ ...A } fragment A on Query { ...B } fragment B on Query { ...A }".to_owned(),
            1 => "{ me { ...U } } fragment U on User { id ...U }".to_owned(),
            2 => {
                // F0 spreads F1 `fan` times, F1 spreads F2 `fan` times...: fan^levels fields.
                let levels = self.rng.gen_range(2..40);
                let fan = self.rng.gen_range(2..12);
                let mut q = String::from("{ ...F0 }");
                for level in 0..levels {
                    q.push_str(&format!(" fragment F{level} on Query {{"));
                    for _ in 0..fan {
                        q.push_str(&format!(" ...F{}", level + 1));
                    }
                    q.push_str(" }");
                }
                q.push_str(&format!(" fragment F{levels} on Query {{ __typename }}"));
                q
            }
            3 => {
                // The same with inline fragments and fields in between.
                let levels = self.rng.gen_range(2..30);
                let mut q = String::from("{ me { ...U0 } }");
                for level in 0..levels {
                    q.push_str(&format!(
                        " fragment U{level} on User {{ id ...U{n} ... on User {{ ...U{n} }} a{level}: userName }}",
                        n = level + 1
                    ));
                }
                q.push_str(&format!(" fragment U{levels} on User {{ id }}"));
                q
            }
            _ => {
                let count = self.rng.gen_range(10..300);
                let mut q = String::from("{ me { ");
                for i in 0..count {
                    q.push_str(&format!("...G{i} "));
                }
                q.push('}');
                q.push_str(" }");
                for i in 0..count {
                    q.push_str(&format!(
                        " fragment G{i} on User {{ id ...G{} }}",
                        (i + 1) % count
                    ));
                }
                q
            }
        };
        serde_json::to_vec(&json!({ "query": query })).unwrap()
    }

    // ----- mutations and broken bodies -----------------------------------------------------

    /// A generated request whose document is mutated byte by byte.
    fn mutated_request(&mut self) -> Vec<u8> {
        let mut request = self.request_value(true);
        let query = request["query"].as_str().unwrap_or_default().to_owned();
        loop {
            let mutated = self.mutate(query.as_bytes());
            let mutated = String::from_utf8_lossy(&mutated).into_owned();
            if !mutated.contains("server") {
                request["query"] = Value::String(mutated);
                return serde_json::to_vec(&request).unwrap();
            }
        }
    }

    /// A whole request body mutated byte by byte: usually no JSON any more.
    fn mutated_body(&mut self) -> Vec<u8> {
        let body = loop {
            let body = self.request_body(true);
            if !contains(&body, b"server") {
                break body;
            }
        };
        loop {
            let mutated = self.mutate(&body);
            if !contains(&mutated, b"server") {
                return mutated;
            }
        }
    }

    /// Byte flips, insertions, deletions, truncation, duplicated tokens, swapped brackets.
    pub fn mutate(&mut self, input: &[u8]) -> Vec<u8> {
        let mut bytes = input.to_vec();
        let rounds = self.rng.gen_range(1..=4);
        for _ in 0..rounds {
            if bytes.is_empty() {
                bytes.push(b'{');
            }
            let at = self.rng.gen_range(0..bytes.len());
            match self.rng.gen_range(0..9) {
                0 => bytes[at] ^= 1 << self.rng.gen_range(0..8),
                1 => bytes[at] = self.rng.gen(),
                2 => {
                    let byte = *self.pick(b"{}()[]:$@!=.\"\\#,|&\n\t\0'");
                    bytes.insert(at, byte);
                }
                3 => {
                    let end = (at + self.rng.gen_range(1..16)).min(bytes.len());
                    bytes.drain(at..end);
                }
                4 => bytes.truncate(at),
                5 => {
                    // Duplicate the token at `at`, one to fifty times.
                    let (start, end) = token_at(&bytes, at);
                    let token = bytes[start..end].to_vec();
                    let times = if self.chance(0.8) {
                        1
                    } else {
                        self.rng.gen_range(2..50)
                    };
                    for _ in 0..times {
                        bytes.splice(end..end, token.iter().copied().chain([b' ']));
                    }
                }
                6 => {
                    // Swap a bracket for another.
                    let brackets = b"{}()[]";
                    if let Some(offset) = bytes[at..].iter().position(|b| brackets.contains(b)) {
                        bytes[at + offset] = *self.pick(brackets);
                    }
                }
                7 => {
                    let end = (at + self.rng.gen_range(1..32)).min(bytes.len());
                    let span = bytes[at..end].to_vec();
                    let times = self.rng.gen_range(2..200);
                    for _ in 0..times {
                        bytes.splice(end..end, span.iter().copied());
                    }
                }
                _ => {
                    // Swap two tokens.
                    let other = self.rng.gen_range(0..bytes.len());
                    let (a, b) = (
                        token_at(&bytes, at.min(other)),
                        token_at(&bytes, at.max(other)),
                    );
                    if a.1 <= b.0 {
                        let first = bytes[a.0..a.1].to_vec();
                        let second = bytes[b.0..b.1].to_vec();
                        bytes.splice(b.0..b.1, first);
                        bytes.splice(a.0..a.1, second);
                    }
                }
            }
        }
        bytes
    }

    /// Bodies that are no GraphQL request: empty, not JSON, JSON of the wrong shape.
    fn bad_body(&mut self) -> Vec<u8> {
        let fixed: &[&[u8]] = &[
            b"",
            b" ",
            b"{",
            b"}",
            b"nul",
            b"null",
            b"true",
            b"42",
            b"-1e999999",
            b"\"{ me { id } }\"",
            b"[]",
            b"[[]]",
            b"[1, 2, 3]",
            b"{}",
            b"{\"query\": null}",
            b"{\"query\": 1}",
            b"{\"query\": [\"{ me { id } }\"]}",
            b"{\"query\": {\"me\": \"id\"}}",
            b"{\"query\": \"\"}",
            b"{\"query\": \"   \"}",
            b"{\"query\": \"# only a comment\"}",
            b"{\"query\": \"{ me { id } }\", \"query\": \"{ me { userName } }\"}",
            b"{\"query\": \"{ me { id } }\"} trailing",
            b"{\"query\": \"{ me { id } }\",}",
            b"{\"query\": \"\\ud800\"}",
            b"{\"query\": \"\\udc00\\ud800\"}",
            b"{\"query\": \"{ me(x: \\\"\\u0000\\\") { id } }\"}",
            b"{\"query\": \"\xff\xfe\"}",
            b"\xef\xbb\xbf{\"query\": \"{ me { id } }\"}",
            b"\x00\x00\x00",
            b"{\"query\": \"{ me { id } }\", \"variables\": {\"a\": 1e999}}",
            b"{\"query\": \"{ me { id } }\", \"variables\": {\"a\": 123456789012345678901234567890}}",
            b"{\"query\": \"{ me { id } }\", \"operationName\": {}}",
            b"{\"query\": \"{ me { id } }\", \"extensions\": [1]}",
            b"{'query': '{ me { id } }'}",
            b"query=%7B%20me%20%7B%20id%20%7D%20%7D",
            b"--x\r\nContent-Disposition: form-data; name=\"operations\"\r\n\r\n{}\r\n--x--",
            b"{ me { id } }",
            b"[{\"query\": \"{ me { id } }\"}, 7]",
        ];
        if self.chance(0.8) {
            return self.pick(fixed).to_vec();
        }
        let length = self.rng.gen_range(1..512);
        (0..length).map(|_| self.rng.gen()).collect()
    }

    // ----- websocket messages --------------------------------------------------------------

    /// One message for a `graphql-transport-ws` socket that has been acknowledged.
    pub fn socket_message(&mut self) -> SocketMessage {
        let ids = [
            "1",
            "2",
            "3",
            "",
            "\u{0}",
            "🙂",
            "a-very-long-id-that-goes-on-and-on-and-on-and-on",
        ];
        match self.rng.gen_range(0..100) {
            0..=54 => {
                let id = self.pick(&ids).to_string();
                let mut request = loop {
                    let request = self.subscription_request();
                    if self.rng.gen_range(0..10) < 8 || !request.to_string().contains("server") {
                        break request;
                    }
                };
                if self.chance(0.05) {
                    request = json!("not an object");
                }
                SocketMessage::Text(
                    json!({ "id": id, "type": "subscribe", "payload": request }).to_string(),
                )
            }
            55..=64 => {
                let message = loop {
                    let request = self.subscription_request();
                    let text =
                        json!({ "id": "m", "type": "subscribe", "payload": request }).to_string();
                    if !text.contains("server") {
                        break text;
                    }
                };
                loop {
                    let mutated = self.mutate(message.as_bytes());
                    if !contains(&mutated, b"server") {
                        return match String::from_utf8(mutated) {
                            Ok(text) => SocketMessage::Text(text),
                            Err(e) => SocketMessage::Binary(e.into_bytes()),
                        };
                    }
                }
            }
            65..=74 => {
                let id = self.pick(&ids).to_string();
                SocketMessage::Text(json!({ "id": id, "type": "complete" }).to_string())
            }
            75..=79 => {
                let payload = self
                    .pick(&[
                        json!(null),
                        json!({}),
                        json!("p"),
                        json!([1]),
                        json!({"a": {"b": [null]}}),
                    ])
                    .clone();
                let kind = *self.pick(&["ping", "pong"]);
                SocketMessage::Text(json!({ "type": kind, "payload": payload }).to_string())
            }
            80..=91 => {
                let texts = [
                    "",
                    "not json",
                    "{",
                    "null",
                    "42",
                    "[]",
                    "{}",
                    "{\"type\": \"nope\"}",
                    "{\"type\": 1}",
                    "{\"type\": \"subscribe\"}",
                    "{\"type\": \"subscribe\", \"id\": \"x\"}",
                    "{\"type\": \"subscribe\", \"id\": 1, \"payload\": {\"query\": \"subscription { historyAppended { id } }\"}}",
                    "{\"type\": \"subscribe\", \"id\": \"x\", \"payload\": {\"query\": 5}}",
                    "{\"type\": \"subscribe\", \"id\": \"x\", \"payload\": {\"query\": \"subscription { historyAppended { id } }\", \"variables\": [1]}}",
                    "{\"type\": \"complete\"}",
                    "{\"type\": \"next\", \"id\": \"1\", \"payload\": {}}",
                    "{\"type\": \"error\", \"id\": \"1\", \"payload\": []}",
                    "{\"type\": \"connection_ack\"}",
                    "{\"type\": \"connection_init\", \"payload\": {}}",
                    "{\"type\": \"start\", \"id\": \"1\", \"payload\": {\"query\": \"{ me { id } }\"}}",
                    "{\"type\": \"connection_terminate\"}",
                    "{\"type\": \"stop\", \"id\": \"1\"}",
                ];
                SocketMessage::Text(self.pick(&texts).to_string())
            }
            92..=95 => {
                let length = self.rng.gen_range(0..300);
                SocketMessage::Binary((0..length).map(|_| self.rng.gen()).collect())
            }
            96..=97 => {
                let big = |length: usize| {
                    format!(
                        "{{\"id\": \"big\", \"type\": \"subscribe\", \"payload\": {{\"query\": \"{}\"}}}}",
                        "a".repeat(length)
                    )
                };
                if self.chance(0.5) {
                    SocketMessage::Text(big(64 << 10))
                } else {
                    SocketMessage::Oversized(big(1 << 20))
                }
            }
            _ => {
                let inits = [
                    None,
                    Some(json!({"type": "connection_init"})),
                    Some(json!({"type": "connection_init", "payload": 5})),
                    Some(
                        json!({"type": "connection_init", "payload": {"Authorization": "Bearer forged"}}),
                    ),
                    Some(json!({"type": "connection_init", "payload": {"token": 5}})),
                    Some(
                        json!({"type": "connection_init", "payload": {"authorization": "Bearer {token}"}}),
                    ),
                    Some(json!({"type": "connection_init", "payload": {"token": "{token}"}})),
                ];
                SocketMessage::Reopen(self.pick(&inits).as_ref().map(Value::to_string))
            }
        }
    }

    /// The payload of a `subscribe`: mostly subscriptions, some queries and mutations.
    fn subscription_request(&mut self) -> Value {
        loop {
            let request = self.request_value(false);
            let query = request["query"].as_str().unwrap_or_default();
            if query.contains("subscription") || self.chance(0.3) {
                return request;
            }
        }
    }
}

/// A message to send on a websocket, or a new socket to open.
#[derive(Debug, Clone)]
pub enum SocketMessage {
    Text(String),
    Binary(Vec<u8>),
    /// A text message over the server's size limit (1 MiB).
    Oversized(String),
    /// Close this socket and open another, sending this `connection_init` (`{token}` stands
    /// for the user's token) or, with `None`, nothing before the next messages.
    Reopen(Option<String>),
}

const JSON: &str = "application/json";

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Whether a document or its variables name a server (an account input).
fn mentions_server(query: &[u8], variables: &Map<String, Value>) -> bool {
    contains(query, b"server")
        || Value::Object(variables.clone())
            .to_string()
            .contains("server")
}

/// The bounds of the token around `at`: a name or number, or one other byte.
fn token_at(bytes: &[u8], at: usize) -> (usize, usize) {
    let word = |b: &u8| b.is_ascii_alphanumeric() || *b == b'_';
    if !word(&bytes[at]) {
        return (at, at + 1);
    }
    let start = bytes[..at]
        .iter()
        .rposition(|b| !word(b))
        .map_or(0, |p| p + 1);
    let end = bytes[at..]
        .iter()
        .position(|b| !word(b))
        .map_or(bytes.len(), |p| at + p);
    (start, end)
}

/// The same type with every non-null dropped.
fn relax(ty: &Type) -> String {
    match &ty.base {
        BaseType::Named(name) => name.to_string(),
        BaseType::List(inner) => format!("[{}]", relax(inner)),
    }
}
