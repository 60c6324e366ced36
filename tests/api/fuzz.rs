//! Issue 11: thousands of fuzzed GraphQL requests, and a few hundred fuzzed websocket messages,
//! against a running server. Every answer must be JSON in the shape of a GraphQL response, with
//! no 5xx, no `INTERNAL` error and no panic text; afterwards the server must still serve.
//!
//! Knobs (environment): `SWITCHBOARD_FUZZ_SEED` (decimal or 0x-hex; printed on failure),
//! `SWITCHBOARD_FUZZ_DOCUMENTS` (HTTP requests, default 3000), `SWITCHBOARD_FUZZ_SOCKET_MESSAGES`
//! (default 300), `SWITCHBOARD_FUZZ_CONCURRENCY` (requests in flight, default 4), and
//! `SWITCHBOARD_FUZZ_TRACE=1`, which writes each request to stderr before it is sent, one at a
//! time: for a request that takes the whole process down, where no failure report is printed.

mod generate;
mod schema;

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

use crate::helpers::*;
use generate::{Auth, Case, Generator, SocketMessage};
use schema::Schema;

const DEFAULT_SEED: u64 = 0x5b0a_2d11_f022_0011;
/// Longer than this without an answer is a hang.
const ANSWER_WITHIN: Duration = Duration::from_secs(30);
/// Failures collected before the run stops.
const MAX_FAILURES: usize = 10;

struct Config {
    seed: u64,
    documents: usize,
    socket_messages: usize,
    concurrency: usize,
    trace: bool,
}

impl Config {
    fn from_env() -> Config {
        let number = |name: &str, default: u64| -> u64 {
            match std::env::var(name) {
                Ok(text) => {
                    let text = text.trim();
                    text.strip_prefix("0x")
                        .map(|hex| u64::from_str_radix(hex, 16))
                        .unwrap_or_else(|| text.parse())
                        .unwrap_or_else(|_| panic!("{name}={text} is not a number"))
                }
                Err(_) => default,
            }
        };
        let trace = std::env::var("SWITCHBOARD_FUZZ_TRACE").is_ok_and(|v| v == "1");
        Config {
            seed: number("SWITCHBOARD_FUZZ_SEED", DEFAULT_SEED),
            documents: number("SWITCHBOARD_FUZZ_DOCUMENTS", 3000) as usize,
            socket_messages: number("SWITCHBOARD_FUZZ_SOCKET_MESSAGES", 300) as usize,
            concurrency: if trace {
                1
            } else {
                number("SWITCHBOARD_FUZZ_CONCURRENCY", 4).max(1) as usize
            },
            trace,
        }
    }
}

// ----- what went wrong, and how often each answer came -----------------------------------

/// Panics on the worker threads of these tests' runtimes (where the server runs), by thread
/// name.
static PANICS: Mutex<Vec<(String, String)>> = Mutex::new(Vec::new());

/// A runtime of two workers named `name`, the server's and the client's, with the panic
/// hook watching them. Two, so that a request the server never finishes cannot stop the
/// client's clock: the hang is reported with its request.
fn runtime(name: &'static str) -> tokio::runtime::Runtime {
    static INSTALL: std::sync::Once = std::sync::Once::new();
    INSTALL.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let thread = std::thread::current().name().unwrap_or_default().to_owned();
            if thread.starts_with("fuzz-") {
                PANICS.lock().unwrap().push((thread, info.to_string()));
            }
            previous(info);
        }));
    });
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name(name)
        .enable_all()
        .build()
        .expect("a runtime")
}

/// Runs a fuzzing test on its own runtime: its report, or a failure with the panics of the
/// server's threads. A request still running is left behind rather than waited for.
fn run(name: &'static str, test: impl std::future::Future<Output = Result<String, String>>) {
    let runtime = runtime(name);
    let outcome = runtime.block_on(test);
    runtime.shutdown_timeout(Duration::from_secs(5));
    let panics: Vec<String> = PANICS
        .lock()
        .unwrap()
        .iter()
        .filter(|(thread, _)| thread == name)
        .map(|(_, message)| message.clone())
        .collect();
    match outcome {
        Ok(report) if panics.is_empty() => println!("{report}"),
        Ok(_) => panic!("the server panicked: {panics:#?}"),
        Err(failures) => panic!("{failures}\npanics of the server: {panics:#?}"),
    }
}

#[derive(Default)]
struct Tally {
    kinds: BTreeMap<&'static str, usize>,
    /// Time spent waiting for answers, by kind of request.
    waited: BTreeMap<&'static str, Duration>,
    statuses: BTreeMap<u16, usize>,
    /// Responses (or batch items) by the `extensions.code` of their errors, each code
    /// counted once per response ("-" for none: parse and validation errors).
    codes: BTreeMap<String, usize>,
    /// The slowest request: its time, number and kind.
    slowest: (Duration, usize, &'static str),
    /// Responses (or batch items) with data and no errors.
    clean: usize,
    relogins: usize,
}

impl Tally {
    fn codes(&self) -> String {
        self.codes
            .iter()
            .map(|(code, count)| format!("{code} {count}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Text that only a panic or an unhandled Rust error would put in a message.
const PANIC_TEXTS: &[&str] = &[
    "panicked",
    "panic",
    "RUST_BACKTRACE",
    "unwrap()",
    "called `Option::",
    "called `Result::",
    "with overflow",
    "index out of bounds",
    "stack backtrace",
];

/// What is wrong with one GraphQL-shaped answer (an object with `data` or `errors`), if
/// anything; the codes of its errors go to `codes`.
fn check_response(response: &Value, codes: &mut Vec<String>) -> Result<bool, String> {
    let object = response
        .as_object()
        .ok_or_else(|| format!("a response that is no JSON object: {response}"))?;
    if !object.contains_key("data") && !object.contains_key("errors") {
        return Err(format!(
            "a response with neither data nor errors: {response}"
        ));
    }
    let errors = match object.get("errors") {
        None => return Ok(true),
        Some(Value::Array(errors)) if !errors.is_empty() => errors,
        Some(other) => return Err(format!("`errors` is not a list of errors: {other}")),
    };
    for error in errors {
        let message = error["message"]
            .as_str()
            .ok_or_else(|| format!("an error without a message: {error}"))?;
        let code = error["extensions"]["code"].as_str().unwrap_or("-");
        if code == "INTERNAL" {
            return Err(format!("an INTERNAL error: {error}"));
        }
        let lower = message.to_lowercase();
        if let Some(text) = PANIC_TEXTS
            .iter()
            .find(|t| lower.contains(&t.to_lowercase()))
        {
            return Err(format!("panic text {text:?} in an error: {error}"));
        }
        if !codes.iter().any(|c| c == code) {
            codes.push(code.to_owned());
        }
    }
    Ok(false)
}

/// What is wrong with an HTTP answer, if anything.
fn check_answer(status: u16, body: &[u8], tally: &mut Tally) -> Result<(), String> {
    if status >= 500 {
        return Err(format!(
            "status {status}: {}",
            String::from_utf8_lossy(&body[..body.len().min(2000)])
        ));
    }
    let json: Value = serde_json::from_slice(body).map_err(|e| {
        format!(
            "status {status}, a body that is not JSON ({e}): {}",
            String::from_utf8_lossy(&body[..body.len().min(2000)])
        )
    })?;
    let responses = match &json {
        Value::Array(items) => items.iter().collect(),
        one => vec![one],
    };
    for response in responses {
        let mut codes = Vec::new();
        if check_response(response, &mut codes)? {
            tally.clean += 1;
        }
        for code in codes {
            *tally.codes.entry(code).or_default() += 1;
        }
    }
    Ok(())
}

struct Failure {
    index: usize,
    case: Case,
    problem: String,
}

/// A failure, with the exact request (the body in full in a file when it is long).
fn report(seed: u64, failure: &Failure) -> String {
    let Failure {
        index,
        case,
        problem,
    } = failure;
    let text = String::from_utf8_lossy(&case.body);
    let mut shown: String = text.chars().take(8000).collect();
    if shown.len() < text.len() {
        let path = std::env::temp_dir().join(format!("switchboard-fuzz-{seed:#x}-{index}.body"));
        let saved = std::fs::write(&path, &case.body).map(|_| path.display().to_string());
        shown.push_str(&format!(
            "… ({} bytes in all; the whole body: {})",
            case.body.len(),
            saved.unwrap_or_else(|e| format!("not saved: {e}"))
        ));
    }
    format!(
        "request #{index} ({}; auth {:?}; content-type {:?}): {problem}\n  body: {shown}",
        case.kind, case.auth, case.content_type
    )
}

// ----- HTTP --------------------------------------------------------------------------------

/// The bearer tokens fuzzed requests carry.
#[derive(Clone)]
struct Tokens {
    user: String,
    auditor: String,
}

/// Sends one case with the token it says: the status and body.
async fn post_case(app: &TestApp, tokens: &Tokens, case: &Case) -> Result<(u16, Vec<u8>), String> {
    let mut request = app
        .http
        .post(app.url("/graphql"))
        .timeout(ANSWER_WITHIN)
        .body(case.body.clone());
    if let Some(content_type) = case.content_type {
        request = request.header("content-type", content_type);
    }
    match &case.auth {
        Auth::Anonymous => {}
        Auth::User => request = request.bearer_auth(&tokens.user),
        Auth::Auditor => request = request.bearer_auth(&tokens.auditor),
        Auth::Header(header) => {
            request = request.header("authorization", header.replace("{token}", &tokens.user))
        }
    }
    let response = request.send().await.map_err(|e| {
        if e.is_timeout() {
            format!("no answer within {ANSWER_WITHIN:?} (a hang): {e}")
        } else {
            format!("no answer (did the server drop the connection?): {e:?}")
        }
    })?;
    let status = response.status().as_u16();
    let body = response
        .bytes()
        .await
        .map_err(|e| format!("status {status}, the body broke off: {e}"))?;
    Ok((status, body.to_vec()))
}

/// The fuzzing user's token, logging in again if a fuzzed `logout` or `revokeSession` ended
/// the session.
async fn live_token(app: &TestApp, user: &str, token: String, tally: &mut Tally) -> String {
    let me = app
        .gql(Some(&token), "{ me { userName } }", json!({}))
        .await;
    if me.0["data"]["me"]["userName"] == user {
        return token;
    }
    tally.relogins += 1;
    app.login(user).await["token"].as_str().unwrap().to_owned()
}

const AUDITOR: &str = "fuzzaudit";

/// Creates the fuzzing auditor (as an administrator does, from the command line); its password.
fn add_auditor(app: &TestApp) -> String {
    crate::audit::auditor_cli(&app.database_url, &["add", AUDITOR])
        .lines()
        .find_map(|l| l.strip_prefix("password (shown once, keep it safe): "))
        .expect("the password is printed")
        .to_owned()
}

/// The fuzzing auditor's token, logging in again if a fuzzed `auditorLogout` ended it.
async fn live_auditor(
    app: &TestApp,
    password: &str,
    token: Option<String>,
    tally: &mut Tally,
) -> String {
    if let Some(token) = token {
        let users = app
            .gql(
                Some(&token),
                "{ auditUsers(first: 1) { pageInfo { hasNextPage } } }",
                json!({}),
            )
            .await;
        if users.0.get("errors").is_none() {
            return token;
        }
        tally.relogins += 1;
    }
    let login = app
        .gql(
            None,
            "mutation($n: String!, $p: String!) { auditorLogin(name: $n, password: $p) { token } }",
            json!({ "n": AUDITOR, "p": password }),
        )
        .await;
    login.data()["auditorLogin"]["token"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[test]
fn fuzzed_graphql_requests_get_clean_answers_and_leave_the_server_healthy() {
    run("fuzz-http", fuzz_http());
}

async fn fuzz_http() -> Result<String, String> {
    let config = Config::from_env();
    let schema = Schema::load();
    let app = spawn_app().await;
    let user = "fuzzer";
    let mut tally = Tally::default();
    let auditor_password = add_auditor(&app);
    let mut tokens = Tokens {
        user: app.register(user, json!([])).await,
        auditor: live_auditor(&app, &auditor_password, None, &mut tally).await,
    };
    let mut generator = Generator::new(config.seed, &schema);
    let mut failures = Vec::new();
    let started = Instant::now();
    let mut sent = 0;
    let chunk = if config.trace {
        1
    } else {
        4 * config.concurrency
    };
    while sent < config.documents && failures.len() < MAX_FAILURES {
        let cases: Vec<(usize, Case)> = (sent..config.documents.min(sent + chunk))
            .map(|index| (index, generator.case()))
            .collect();
        sent += cases.len();
        if config.trace {
            let (index, case) = &cases[0];
            let _ = writeln!(
                std::io::stderr(),
                "fuzz #{index} ({}, {:?}): {}",
                case.kind,
                case.auth,
                String::from_utf8_lossy(&case.body)
            );
        }
        let answers: Vec<_> = futures::stream::iter(cases.iter())
            .map(|(index, case)| {
                let tokens = &tokens;
                let app = &app;
                async move {
                    let started = Instant::now();
                    let answer = post_case(app, tokens, case).await;
                    (*index, started.elapsed(), answer)
                }
            })
            .buffer_unordered(config.concurrency)
            .collect()
            .await;
        let mut session_touched = false;
        for (index, took, answer) in answers {
            let case = &cases.iter().find(|(i, _)| *i == index).unwrap().1;
            *tally.kinds.entry(case.kind).or_default() += 1;
            *tally.waited.entry(case.kind).or_default() += took;
            if took > tally.slowest.0 {
                tally.slowest = (took, index, case.kind);
            }
            session_touched |= mentions(&case.body, b"logout") || mentions(&case.body, b"revoke");
            let verdict = answer.and_then(|(status, body)| {
                *tally.statuses.entry(status).or_default() += 1;
                check_answer(status, &body, &mut tally)
            });
            if let Err(problem) = verdict {
                failures.push(Failure {
                    index,
                    case: case.clone(),
                    problem,
                });
            }
        }
        if session_touched {
            tokens.user = live_token(&app, user, tokens.user, &mut tally).await;
            tokens.auditor =
                live_auditor(&app, &auditor_password, Some(tokens.auditor), &mut tally).await;
        }
    }
    let elapsed = started.elapsed();
    failures.sort_by_key(|f| f.index);
    if !failures.is_empty() {
        return Err(format!(
            "fuzzing found {} bad answers (seed {:#x}; rerun with SWITCHBOARD_FUZZ_SEED={:#x}):\n{}",
            failures.len(),
            config.seed,
            config.seed,
            failures
                .iter()
                .map(|f| report(config.seed, f))
                .collect::<Vec<_>>()
                .join("\n\n"),
        ));
    }

    // Still serving: health, the fuzzing user's session, a newcomer, the server task.
    let health = app.http.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200, "healthz after fuzzing");
    let token = live_token(&app, user, tokens.user, &mut tally).await;
    let me = app
        .gql(Some(&token), "{ me { userName } }", json!({}))
        .await;
    assert_eq!(me.data()["me"]["userName"], user);
    let newcomer = app.register("afterfuzz", json!([])).await;
    let me = app
        .gql(Some(&newcomer), "{ me { userName } }", json!({}))
        .await;
    assert_eq!(me.data()["me"]["userName"], "afterfuzz");
    let login = app.login("afterfuzz").await;
    assert!(login["token"].as_str().is_some_and(|t| !t.is_empty()));
    live_auditor(&app, &auditor_password, Some(tokens.auditor), &mut tally).await;
    assert!(app.is_running(), "the server task ended during fuzzing");
    app.stop().await;
    Ok(format!(
        "fuzz (HTTP): seed {:#x}, {sent} requests in {:.1} s ({:.0}/s; slowest #{} ({}), {} ms), {} answers without errors; kinds: {:?}; seconds waited by kind: {}; statuses: {:?}; answers by error code: {}; re-logins after fuzzed logouts: {}",
        config.seed,
        elapsed.as_secs_f64(),
        sent as f64 / elapsed.as_secs_f64(),
        tally.slowest.1,
        tally.slowest.2,
        tally.slowest.0.as_millis(),
        tally.clean,
        tally.kinds,
        tally
            .waited
            .iter()
            .map(|(kind, time)| format!("{kind} {:.1}", time.as_secs_f64()))
            .collect::<Vec<_>>()
            .join(", "),
        tally.statuses,
        tally.codes(),
        tally.relogins,
    ))
}

fn mentions(body: &[u8], word: &[u8]) -> bool {
    body.windows(word.len()).any(|w| w == word)
}

// ----- websocket ---------------------------------------------------------------------------

/// How a socket answered a message followed by a ping.
enum Settled {
    /// The pong came (after whatever else the server sent).
    Pong,
    /// The server closed the socket with this code and reason.
    Closed(u16, String),
}

/// Close codes a server may end a `graphql-transport-ws` socket with after bad input.
fn clean_close(code: u16, reason: &str) -> bool {
    match code {
        1000 | 1002 | 1003 | 1007 | 1008 | 1009 => true,
        4400 | 4401 | 4403 | 4409 | 4429 => true,
        // async-graphql's answer to a subscribe before the connection is acknowledged (the
        // protocol says 4401): not an internal error of ours.
        1011 => reason == "The handshake is not completed.",
        _ => false,
    }
}

/// Checks one server message; counts `next`s carrying data.
fn check_socket_text(text: &str, tally: &mut Tally) -> Result<(), String> {
    let message: Value = serde_json::from_str(text)
        .map_err(|e| format!("a message that is not JSON ({e}): {text}"))?;
    let kind = message["type"].as_str().unwrap_or_default();
    *tally
        .kinds
        .entry(match kind {
            "connection_ack" => "connection_ack",
            "next" => "next",
            "error" => "error",
            "complete" => "complete",
            "ping" => "ping",
            "pong" => "pong",
            _ => return Err(format!("a message of an unknown type: {text}")),
        })
        .or_default() += 1;
    let mut codes = Vec::new();
    let clean = match kind {
        "next" => check_response(&message["payload"], &mut codes)?,
        "error" => check_response(&json!({ "errors": message["payload"] }), &mut codes)?,
        _ => false,
    };
    if clean {
        tally.clean += 1;
    }
    for code in codes {
        *tally.codes.entry(code).or_default() += 1;
    }
    Ok(())
}

/// Pings, then reads until the pong or the server's close; every message on the way is
/// checked. A socket that breaks off without a close frame, or stays silent, is a failure.
async fn settle(socket: &mut Socket, tally: &mut Tally) -> Result<Settled, String> {
    // The server may have closed already; its close frame is still to be read.
    let _ = socket
        .send(Message::Text(json!({"type": "ping"}).to_string().into()))
        .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let next = tokio::time::timeout_at(deadline, socket.next())
            .await
            .map_err(|_| "neither a pong nor a close within 10 s (a hang)".to_owned())?;
        match next {
            Some(Ok(Message::Text(text))) => {
                let pong = serde_json::from_str::<Value>(&text)
                    .is_ok_and(|m| m["type"] == "pong" && m["payload"].is_null());
                check_socket_text(&text, tally)?;
                if pong {
                    return Ok(Settled::Pong);
                }
            }
            Some(Ok(Message::Close(frame))) => {
                let (code, reason) = frame
                    .map(|f| (u16::from(f.code), f.reason.to_string()))
                    .unwrap_or((1005, String::new()));
                return Ok(Settled::Closed(code, reason));
            }
            Some(Ok(Message::Binary(bytes))) => {
                return Err(format!("a binary message: {bytes:?}"));
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(format!("the socket broke off without a close frame: {e}")),
            None => return Err("the socket ended without a close frame".into()),
        }
    }
}

/// A socket speaking graphql-transport-ws, with nothing sent yet.
async fn raw_socket(app: &TestApp) -> Socket {
    let (socket, _) = tokio_tungstenite::connect_async(ws_request(app))
        .await
        .expect("the websocket opens");
    socket
}

#[test]
fn fuzzed_subscription_messages_get_answers_or_clean_closes() {
    run("fuzz-ws", fuzz_socket());
}

async fn fuzz_socket() -> Result<String, String> {
    let config = Config::from_env();
    let schema = Schema::load();
    let app = spawn_app().await;
    let user = "wsfuzzer";
    let mut token = app.register(user, json!([])).await;
    let mut generator = Generator::new(config.seed ^ 0x5c0e7, &schema);
    let mut tally = Tally::default();
    let mut closes: BTreeMap<String, usize> = BTreeMap::new();
    let mut failures = Vec::new();
    let started = Instant::now();
    let mut socket = Some(open_socket(&app, &token).await);
    for index in 0..config.socket_messages {
        let message = generator.socket_message();
        let shown = match &message {
            SocketMessage::Text(text) => format!("text {text}"),
            SocketMessage::Oversized(text) => format!("{} bytes of text", text.len()),
            SocketMessage::Binary(bytes) => format!("binary {bytes:?}"),
            SocketMessage::Reopen(init) => format!("a new socket, then {init:?}"),
        };
        let shown: String = shown.chars().take(4000).collect();
        if config.trace {
            let _ = writeln!(std::io::stderr(), "fuzz socket #{index}: {shown}");
        }
        let oversized = matches!(message, SocketMessage::Oversized(_));
        if socket.is_none() || matches!(message, SocketMessage::Reopen(_)) {
            // A fuzzed `logout` sent over the socket may have ended the session.
            token = live_token(&app, user, token, &mut tally).await;
        }
        let current = match (message, socket.take()) {
            (SocketMessage::Reopen(init), old) => {
                if let Some(mut old) = old {
                    let _ = old.close(None).await;
                }
                let mut fresh = raw_socket(&app).await;
                if let Some(init) = init {
                    let init = init.replace("{token}", &token);
                    fresh.send(Message::Text(init.into())).await.unwrap();
                }
                fresh
            }
            (message, old) => {
                let mut current = match old {
                    Some(socket) => socket,
                    None => open_socket(&app, &token).await,
                };
                let frame = match message {
                    SocketMessage::Text(text) | SocketMessage::Oversized(text) => {
                        Message::Text(text.into())
                    }
                    SocketMessage::Binary(bytes) => Message::Binary(bytes.into()),
                    SocketMessage::Reopen(_) => unreachable!(),
                };
                // A send can fail when the server has closed already: settle reads why.
                let _ = current.send(frame).await;
                current
            }
        };
        let mut current = current;
        match settle(&mut current, &mut tally).await {
            Ok(Settled::Pong) => socket = Some(current),
            Ok(Settled::Closed(code, reason)) => {
                *closes.entry(code.to_string()).or_default() += 1;
                if !clean_close(code, &reason) {
                    failures.push(format!(
                        "socket message #{index}: closed with {code} {reason:?} after {shown}"
                    ));
                }
            }
            // Over the limit, the rest of the message cannot be read: the server sends its
            // close frame, but the client may see the connection reset before reading it.
            Err(problem) if oversized && problem.contains("broke off") => {
                *closes
                    .entry("reset after an oversized message".into())
                    .or_default() += 1;
            }
            Err(problem) => {
                failures.push(format!("socket message #{index}: {problem} after {shown}"))
            }
        }
        if failures.len() >= MAX_FAILURES {
            break;
        }
        // Make the user's views change now and then, so live subscriptions send something.
        if index % 10 == 9 {
            let set = app
                .gql(
                    Some(&token),
                    "mutation($n: Int) { setMatchPolicy(autoBindAt: $n) }",
                    json!({ "n": 50 + index % 40 }),
                )
                .await;
            if set.0.get("errors").is_some() {
                token = live_token(&app, user, token, &mut tally).await;
            }
        }
    }
    let elapsed = started.elapsed();
    if !failures.is_empty() {
        return Err(format!(
            "socket fuzzing (seed {:#x}; rerun with SWITCHBOARD_FUZZ_SEED={:#x}) found:\n{}",
            config.seed,
            config.seed,
            failures.join("\n\n")
        ));
    }

    // A fresh socket still gets its subscription's news, and HTTP still serves.
    let token = live_token(&app, user, token, &mut tally).await;
    let mut fresh = open_socket(&app, &token).await;
    send(
        &mut fresh,
        json!({"id": "after", "type": "subscribe", "payload": {"query": "subscription { historyAppended { kind } }"}}),
    )
    .await;
    // Subscribed once the server has read the message: the ping after it is answered.
    match settle(&mut fresh, &mut tally).await {
        Ok(Settled::Pong) => {}
        _ => panic!("a fresh socket does not answer a ping"),
    }
    // A policy other than the one in force (fuzzed messages may have set any).
    let policy = app.gql(Some(&token), "{ matchPolicy }", json!({})).await;
    let other = if policy.data()["matchPolicy"] == 77 {
        78
    } else {
        77
    };
    app.gql(
        Some(&token),
        "mutation($n: Int) { setMatchPolicy(autoBindAt: $n) }",
        json!({ "n": other }),
    )
    .await
    .data();
    let news = next(&mut fresh).await;
    assert_eq!(news["id"], "after", "{news}");
    assert_eq!(
        news["payload"]["data"]["historyAppended"]["kind"], "MATCH_POLICY_SET",
        "{news}"
    );
    let health = app.http.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    assert!(app.is_running(), "the server task ended during fuzzing");
    app.stop().await;
    Ok(format!(
        "fuzz (websocket): seed {:#x}, {} messages in {:.1} s; server messages: {:?}; next with data: {}; errors by code: {}; closes by code: {closes:?}",
        config.seed ^ 0x5c0e7,
        config.socket_messages,
        elapsed.as_secs_f64(),
        tally.kinds,
        tally.clean,
        tally.codes(),
    ))
}
