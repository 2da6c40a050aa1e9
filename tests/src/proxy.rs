//! A fault proxy: a TCP forwarder on 127.0.0.1 in front of the local AWS that a test can
//! cut, as a network or an AWS endpoint can be. While it is cut, every connection is
//! closed as soon as it is accepted and the ones already open are dropped, so a client
//! sees its calls fail at once (the SDK's dispatch failure), whatever it had pooled.

use std::sync::Arc;

use tokio::io::copy_bidirectional;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

pub struct FaultProxy {
    /// Where clients connect: `http://127.0.0.1:PORT`.
    pub url: String,
    cut: Arc<watch::Sender<bool>>,
    accepting: tokio::task::JoinHandle<()>,
}

impl FaultProxy {
    /// Forwards to `upstream` (`http://127.0.0.1:PORT`) until cut.
    pub async fn start(upstream: &str) -> FaultProxy {
        let upstream = upstream.trim_start_matches("http://").trim_end_matches('/').to_owned();
        assert!(upstream.starts_with("127.0.0.1:"), "only loopback: {upstream}");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the proxy");
        let url = format!("http://{}", listener.local_addr().expect("its address"));
        let (cut, _) = watch::channel(false);
        let cut = Arc::new(cut);
        let accepting = {
            let cut = cut.clone();
            tokio::spawn(async move {
                while let Ok((client, _)) = listener.accept().await {
                    if *cut.borrow() {
                        drop(client);
                        continue;
                    }
                    tokio::spawn(forward(client, upstream.clone(), cut.subscribe()));
                }
            })
        };
        FaultProxy { url, cut, accepting }
    }

    /// Cuts every connection (`true`) or lets them through again (`false`).
    pub fn cut(&self, cut: bool) {
        self.cut.send_replace(cut);
    }
}

async fn forward(mut client: TcpStream, upstream: String, mut cut: watch::Receiver<bool>) {
    let Ok(mut server) = TcpStream::connect(&upstream).await else { return };
    tokio::select! {
        _ = copy_bidirectional(&mut client, &mut server) => {}
        _ = cut.wait_for(|cut| *cut) => {}
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.accepting.abort();
    }
}
