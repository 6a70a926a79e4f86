//! Opening the secure channel to the control as a local identity, and naming that
//! identity when the control refuses what it may do.

use anyhow::Context;
use leasehold_channel::home::{Home, HomeError};
use leasehold_protocol::client::{Client, ClientError, worth_another_replica};
use leasehold_protocol::{ErrorCode, Reply, Request};

/// Connects to the control identity `name` enrolled with.
pub async fn as_identity(home: &Home, name: &str) -> anyhow::Result<Client> {
    let identity = home.load_identity(name).map_err(|e| in_home(home, e))?;
    let enrollment = home.load_enrollment(name)?;
    Client::connect(&enrollment, &identity)
        .await
        .with_context(|| format!("connecting to the control as {name:?}"))
}

/// Sends one request as `name`. A refusal for want of rights ("admin only") names the
/// identity that acted, since acting as the wrong one (`--identity`) is the usual cause.
pub async fn call(home: &Home, name: &str, req: Request) -> anyhow::Result<Reply> {
    let mut client = as_identity(home, name).await?;
    let id = client_identity(home, name);
    client.call(req).await.map_err(|e| acting_as(e, name, &id))
}

/// [`call`] for a request worth repeating on another of the control's replicas when
/// the first one says it cannot serve now (e.g. `lease create`): `make` builds it again.
pub async fn call_any_replica(
    home: &Home,
    name: &str,
    make: impl Fn() -> Request,
) -> anyhow::Result<Reply> {
    let mut client = as_identity(home, name).await?;
    let id = client_identity(home, name);
    let refusal = match client.call(make()).await {
        Err(e) if worth_another_replica(&e) => e,
        other => return other.map_err(|e| acting_as(e, name, &id)),
    };
    let enrollment = home.load_enrollment(name)?;
    if enrollment.addrs.len() < 2 {
        return Err(acting_as(refusal, name, &id));
    }
    let identity = home.load_identity(name).map_err(|e| in_home(home, e))?;
    tracing::info!(error = %refusal, "the control replica cannot serve; trying another");
    let elsewhere = client
        .connect_elsewhere(&enrollment.addrs, &enrollment.control, &identity)
        .await;
    match elsewhere {
        Ok(mut other) => other
            .call(make())
            .await
            .map_err(|e| acting_as(e, name, &id)),
        Err(_) => Err(acting_as(refusal, name, &id)),
    }
}

/// Adds the acting identity to a "forbidden" refusal; other errors pass unchanged.
pub fn acting_as(error: ClientError, name: &str, id: &str) -> anyhow::Error {
    match &error {
        ClientError::Remote(e) if e.code == ErrorCode::Forbidden => anyhow::Error::new(error)
            .context(format!(
                "acting as identity {name:?} ({id}); pass --identity with an admin identity"
            )),
        _ => error.into(),
    }
}

/// The identifier of local identity `name`, for messages.
pub fn client_identity(home: &Home, name: &str) -> String {
    home.load_identity(name)
        .map(|i| i.public().to_string())
        .unwrap_or_else(|_| "unknown id".into())
}

/// A missing identity says which home was searched: a wrong `--home` or
/// `LEASEHOLD_HOME` is as likely a cause as a missing `identity create`.
pub fn in_home(home: &Home, error: HomeError) -> anyhow::Error {
    match error {
        HomeError::NotFound(name) => anyhow::anyhow!(
            "no identity named {name:?} in {} (create it with `leasehold identity create {name}`, \
             or point --home/LEASEHOLD_HOME at the home that holds it)",
            home.root().display()
        ),
        other => other.into(),
    }
}
