//! TEMPORARY stub of the simulator API; the real one lands from the sim branch.
use std::net::SocketAddr;
use std::time::Duration;
#[derive(Default)]
pub struct SimulatorConfig {
    pub keys: usize,
}
pub struct Simulator;
impl Simulator {
    pub async fn start(
        _config: SimulatorConfig,
        _listen: SocketAddr,
    ) -> std::io::Result<Simulator> {
        Err(std::io::Error::other("stub"))
    }
    pub fn base_url(&self) -> String {
        String::new()
    }
    pub fn access_token(&self) -> String {
        String::new()
    }
    pub fn spawn_traffic(&self, _every: Duration, _shutdown: tokio_util::sync::CancellationToken) {}
    pub async fn shutdown(self) {}
}
