//! A first-response probe of Sextant's ADS port: a state-of-the-world stream that asks for
//! clusters, over plaintext or TLS, with a client certificate or a bearer token.

use envoy_types::pb::envoy::{config::core::v3::Node, service::discovery::v3::DiscoveryResponse};

use crate::ads_client::{AdsClient, type_url};

/// How a test client authenticates to the secure xDS port.
pub struct SecureClient {
    /// The root that signed Sextant's serving certificate (PEM).
    pub root_pem: String,
    /// A client certificate chain and key (PEM), if any.
    pub identity: Option<(String, String)>,
    /// A bearer token, if any.
    pub token: Option<String>,
}

impl SecureClient {
    /// Opens a state-of-the-world stream on the secure xDS port at `port` as `node`, asks for
    /// clusters and returns the first response, or the status the server refused with.
    pub async fn clusters(
        &self,
        port: u16,
        node: &str,
    ) -> Result<DiscoveryResponse, tonic::Status> {
        let channel = self.connect(port).await?;
        first_clusters(channel, node, self.token.as_deref()).await
    }

    /// A connection to the secure xDS port at `port`, with the client certificate if any (the
    /// token is the caller's to send, per stream).
    pub async fn connect(&self, port: u16) -> Result<tonic::transport::Channel, tonic::Status> {
        use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(self.root_pem.as_bytes()).expect("root PEM"))
            .expect("root");
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_root_certificates(roots);
        let mut config = match &self.identity {
            Some((chain, key)) => builder
                .with_client_auth_cert(
                    CertificateDer::pem_slice_iter(chain.as_bytes())
                        .collect::<Result<_, _>>()
                        .expect("chain PEM"),
                    PrivateKeyDer::from_pem_slice(key.as_bytes()).expect("key PEM"),
                )
                .expect("client certificate"),
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = vec![b"h2".to_vec()];
        let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
        let channel = tonic::transport::Endpoint::from_static("http://127.0.0.1")
            .connect_with_connector(tower::service_fn(move |_| {
                let connector = connector.clone();
                async move {
                    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
                    let name = rustls::pki_types::ServerName::IpAddress(
                        std::net::Ipv4Addr::LOCALHOST.into(),
                    );
                    let tls = connector.connect(name, tcp).await?;
                    Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(tls))
                }
            }))
            .await
            .map_err(|e| tonic::Status::unavailable(format!("connecting: {e:?}")))?;
        Ok(channel)
    }
}

/// Opens a state-of-the-world stream on `channel` as `node` (with a bearer `token`, if any),
/// asks for clusters and returns the first response, or the status the server refused with.
pub async fn first_clusters(
    channel: tonic::transport::Channel,
    node: &str,
    token: Option<&str>,
) -> Result<DiscoveryResponse, tonic::Status> {
    let mut client = AdsClient::new(Node {
        id: node.to_owned(),
        ..Default::default()
    })
    .subscribe([type_url::CLUSTER])
    .max_message_size(64 << 20)
    .keep_messages();
    if let Some(token) = token {
        client = client.bearer_token(token);
    }
    // The probe reads one response and hangs up without ACKing it.
    let first = client.sotw(channel).await?.next().await.transpose()?;
    first
        .and_then(|r| r.message)
        .ok_or_else(|| tonic::Status::unknown("the stream ended without a response"))
}
