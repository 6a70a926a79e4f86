//! Opening the secure channel to the control as a local identity.

use anyhow::Context;
use leasehold_channel::client::Client;
use leasehold_channel::home::Home;

/// Connects to the control identity `name` enrolled with.
pub async fn as_identity(home: &Home, name: &str) -> anyhow::Result<Client> {
    let identity = home.load_identity(name)?;
    let enrollment = home.load_enrollment(name)?;
    Client::connect(&enrollment, &identity)
        .await
        .with_context(|| format!("connecting to the control as {name:?}"))
}
