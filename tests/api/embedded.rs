//! `switchboard serve` with no DATABASE_URL runs its own PostgreSQL in the data folder, keeps
//! its data across restarts, and stops it on shutdown.

use std::process::Stdio;
use std::time::Duration;

use serde_json::json;
use tokio::process::{Child, Command};

async fn serve(data_dir: &std::path::Path, port: u16) -> Child {
    let child = Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .arg("serve")
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .env_remove("DATABASE_URL")
        .env_remove("SWITCHBOARD_MASTER_KEY")
        .env("SWITCHBOARD_DATA_DIR", data_dir)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("the switchboard binary starts");
    let client = reqwest::Client::new();
    for _ in 0..300 {
        if let Ok(r) = client
            .get(format!("http://127.0.0.1:{port}/healthz"))
            .send()
            .await
        {
            if r.status() == 200 {
                return child;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the server with embedded PostgreSQL did not become healthy");
}

async fn post(port: u16, query: &str) -> serde_json::Value {
    reqwest::Client::new()
        .post(format!("http://127.0.0.1:{port}/graphql"))
        .json(&json!({ "query": query }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

async fn terminate(mut child: Child) {
    let pid = child.id().expect("running");
    let status = std::process::Command::new("kill")
        .arg("-TERM")
        .arg(pid.to_string())
        .status()
        .unwrap();
    assert!(status.success());
    let exit = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("stops within 30 s")
        .unwrap();
    assert!(exit.success(), "clean exit on SIGTERM: {exit:?}");
}

#[tokio::test]
async fn serve_without_database_url_runs_and_stops_its_own_postgres() {
    let data_dir =
        std::env::temp_dir().join(format!("switchboard-embedded-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&data_dir).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let server = serve(&data_dir, port).await;
    let body = post(
        port,
        "mutation { register(userName: \"embed\", password: \"correct horse battery\") { token } }",
    )
    .await;
    assert!(body["data"]["register"]["token"].is_string(), "{body}");
    assert!(
        data_dir.join("master.key").exists(),
        "a master key was generated"
    );
    // It listens on a unix socket in the data folder only: no TCP address in postmaster.pid.
    let pid_file = std::fs::read_to_string(data_dir.join("postgres/postmaster.pid"))
        .expect("the embedded cluster is running");
    let lines: Vec<&str> = pid_file.lines().map(str::trim).collect();
    assert_eq!(lines.get(5), Some(&""), "no TCP listener: {lines:?}");
    let socket = data_dir.join("postgres-run/.s.PGSQL.5432");
    assert!(socket.exists(), "{lines:?}");
    terminate(server).await;
    assert!(
        !socket.exists(),
        "the embedded PostgreSQL stopped with the server"
    );

    // Restarted, it finds the same data: the name is taken.
    let server = serve(&data_dir, port).await;
    let body = post(
        port,
        "mutation { login(userName: \"embed\", password: \"correct horse battery\") { token } }",
    )
    .await;
    assert!(body["data"]["login"]["token"].is_string(), "{body}");
    terminate(server).await;
    let _ = std::fs::remove_dir_all(&data_dir);
}
