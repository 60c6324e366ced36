//! A TCP relay that keeps what the client sent: puts a test between a connector and a real
//! server, to check what crossed the wire (e.g. that no credentials went out in the clear).

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// Relays one connection to `upstream` and records the client's bytes.
pub struct Tap {
    /// Where the client connects (`127.0.0.1:PORT`).
    pub address: String,
    relay: JoinHandle<Vec<u8>>,
}

impl Tap {
    pub async fn start(upstream: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let upstream = upstream.to_owned();
        let relay = tokio::spawn(async move {
            let (client, _) = listener.accept().await.unwrap();
            let server = TcpStream::connect(&upstream)
                .await
                .unwrap_or_else(|e| panic!("the tap cannot reach {upstream}: {e}"));
            let (mut client_read, mut client_write) = client.into_split();
            let (mut server_read, mut server_write) = server.into_split();
            let upward = async {
                let mut sent = Vec::new();
                let mut buffer = [0u8; 4096];
                while let Ok(read @ 1..) = client_read.read(&mut buffer).await {
                    sent.extend_from_slice(&buffer[..read]);
                    if server_write.write_all(&buffer[..read]).await.is_err() {
                        break;
                    }
                }
                let _ = server_write.shutdown().await;
                sent
            };
            let downward = async {
                let _ = tokio::io::copy(&mut server_read, &mut client_write).await;
                let _ = client_write.shutdown().await;
            };
            tokio::join!(upward, downward).0
        });
        Self { address, relay }
    }

    /// Everything the client sent, once it has hung up (at most 10 s from now).
    pub async fn sent(self) -> String {
        let sent = tokio::time::timeout(Duration::from_secs(10), self.relay)
            .await
            .expect("the client did not hang up within 10 s")
            .expect("the tap failed");
        String::from_utf8_lossy(&sent).into_owned()
    }
}
