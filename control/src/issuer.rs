//! Which add-on configuration issued a lease, and keeping earlier configurations until
//! every lease they issued has been revoked.
//!
//! A lease's credential lives in the InfluxDB that created it and can only be removed
//! there, by an admin of that server. When `addon configure` points the control
//! elsewhere, the previous configuration is kept (`addons/ID.json`, 0600, beside
//! `addon.json`) and leases record the id of the configuration that issued them, so
//! revocations and sweeps keep going to the old server until nothing issued there is
//! owed a revocation; then the kept configuration is dropped.
//!
//! A configuration's id names *where and as whom* leases are revoked: the backend, its
//! URL, and the organization (v2) or admin user (v1). It deliberately leaves out the
//! secret (an id appears in lease records and logs) and the grants and lifetimes (they
//! do not change where a credential lives). Reconfiguring the same server and principal
//! therefore replaces the credential used for its leases too: after a password or token
//! rotation the new one is the one that works.

use std::sync::Arc;

use blake2::{Blake2s256, Digest};
use leasehold_protocol::AddonConfig;

use crate::control::{Addon, Control};
use crate::error::ControlError;
use crate::store::{Store, StoredLease};

/// The id of an add-on configuration: 16 hex digits of a hash of its backend, URL and
/// principal (see the module comment).
pub fn addon_id(config: &AddonConfig) -> String {
    let (backend, url, principal) = match config {
        AddonConfig::Influxdb {
            endpoint_url,
            org_id,
            ..
        } => ("influxdb", endpoint_url, org_id),
        AddonConfig::InfluxdbV1 {
            endpoint_url,
            username,
            ..
        } => ("influxdb-v1", endpoint_url, username),
    };
    let mut hasher = Blake2s256::new();
    for part in [
        "leasehold add-on v1",
        backend,
        url.trim_end_matches('/'),
        principal,
    ] {
        hasher.update(part.as_bytes());
        hasher.update([0]);
    }
    data_encoding::HEXLOWER.encode(&hasher.finalize()[..8])
}

/// Whether `id` has the form [`addon_id`] gives (file names under `addons/`).
pub fn is_addon_id(id: &str) -> bool {
    id.len() == 16 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Whether `lease` was issued under `addon`. A lease recorded before leases carried
/// the id is matched by the InfluxDB URL it was issued for.
pub fn issued_under(lease: &StoredLease, addon: &Addon) -> bool {
    match &lease.addon_id {
        Some(id) => *id == addon.id,
        None => lease.endpoint_url == addon.backend.endpoint_url(),
    }
}

impl<S: Store> Control<S> {
    /// Loads the configurations kept from earlier `addon configure`s (at start-up).
    pub(crate) async fn load_retired(&self) -> Result<(), ControlError> {
        let current = self.addon.load_full();
        let mut retired = self.retired.lock().await;
        for (id, config) in self.data.load_retired_addons()? {
            let addon = Addon::new(config)?;
            if current.as_ref().is_some_and(|c| c.id == addon.id) {
                // Superseded by the current configuration: not needed.
                self.data.remove_retired_addon(&id)?;
                continue;
            }
            retired.insert(addon.id.clone(), Arc::new(addon));
        }
        Ok(())
    }

    /// Installs `new` as the add-on: the configuration it replaces is kept (on disk
    /// first) if it is another server or principal, and a kept one that `new` supersedes
    /// is dropped. Then drops every kept configuration that is owed nothing.
    pub(crate) async fn install_addon(&self, new: Addon) -> Result<(), ControlError> {
        // Replicas sharing the store learn of it there (first: a configuration the
        // others cannot learn of is not installed here either).
        if self.store.shared() {
            self.share_addon(&new, true).await?;
        }
        self.install_addon_here(new).await
    }

    /// Keeps `addon` in the shared store, sealed with the identity's key.
    async fn share_addon(&self, addon: &Addon, current: bool) -> Result<(), ControlError> {
        let sealed = crate::sealed::seal(self.identity(), &addon.id, &addon.config)
            .map_err(|e| crate::store::StoreError::new(e.to_string()))?;
        self.store
            .put_addon(addon.id.clone(), sealed, current)
            .await?;
        Ok(())
    }

    /// Add-on configuration `id` from the shared store, if it keeps it.
    async fn shared_addon(&self, id: &str) -> Result<Option<Addon>, ControlError> {
        let Some(sealed) = self.store.addon(id.to_owned()).await? else {
            return Ok(None);
        };
        let config = crate::sealed::open(self.identity(), id, &sealed)
            .map_err(|e| crate::store::StoreError::new(e.to_string()))?;
        Ok(Some(Addon::new(config)?))
    }

    /// With a shared store: installs the configuration another replica made current,
    /// if it is not the one in effect here. Called every claim poll.
    pub(crate) async fn follow_shared_addon(&self) -> Result<(), ControlError> {
        let Some(id) = self.store.current_addon().await? else {
            // None shared yet: this replica's own (from its data directory) is offered.
            if let Some(current) = self.addon.load_full() {
                self.share_addon(&current, true).await?;
            }
            return Ok(());
        };
        if self.is_current(&id) {
            return Ok(());
        }
        let Some(addon) = self.shared_addon(&id).await? else {
            return Ok(());
        };
        tracing::info!(addon.id = %id, endpoint = %addon.backend.endpoint_url(), "add-on configured on another replica: installed here");
        self.install_addon_here(addon).await
    }

    /// [`Self::install_addon`] on this replica only.
    async fn install_addon_here(&self, new: Addon) -> Result<(), ControlError> {
        let mut retired = self.retired.lock().await;
        if let Some(previous) = self.addon.load_full().filter(|p| p.id != new.id) {
            self.data
                .save_retired_addon(&previous.id, &previous.config)?;
            tracing::info!(
                addon.id = %previous.id,
                endpoint = %previous.backend.endpoint_url(),
                "earlier add-on configuration kept until its leases are revoked"
            );
            retired.insert(previous.id.clone(), previous);
        }
        self.data.save_addon(&new.config)?;
        if retired.remove(&new.id).is_some() {
            self.data.remove_retired_addon(&new.id)?;
        }
        self.set_addon(new);
        drop(retired);
        self.forget_finished_addons().await;
        Ok(())
    }

    /// The configuration that issued `lease`: where and how to revoke it.
    pub(crate) async fn issuer_of(&self, lease: &StoredLease) -> Result<Arc<Addon>, ControlError> {
        let current = self.addon.load_full();
        if let Some(current) = current.as_ref().filter(|c| issued_under(lease, c)) {
            return Ok(current.clone());
        }
        if let Some(kept) = self
            .retired
            .lock()
            .await
            .values()
            .find(|a| issued_under(lease, a))
        {
            return Ok(kept.clone());
        }
        // Issued by another replica under a configuration this one never had.
        if let Some(id) = lease.addon_id.as_ref().filter(|_| self.store.shared())
            && let Some(addon) = self.shared_addon(id).await?
        {
            let addon = Arc::new(addon);
            self.keep_issuer(&addon).await?;
            return Ok(addon);
        }
        match (&lease.addon_id, current) {
            // A lease from before ids, for a URL no configuration has: as before.
            (None, Some(current)) => Ok(current),
            (None, None) => Err(ControlError::NoAddon),
            (Some(id), _) => Err(ControlError::IssuerMissing(id.clone())),
        }
    }

    /// Called after `lease` was recorded under `addon`: if `addon` was replaced while
    /// the lease was being issued, and its kept copy already dropped as owed nothing,
    /// keep it again, so the lease can still be revoked there.
    pub(crate) async fn keep_issuer(&self, addon: &Arc<Addon>) -> Result<(), ControlError> {
        if self.is_current(&addon.id) {
            return Ok(());
        }
        let mut retired = self.retired.lock().await;
        if !self.is_current(&addon.id) && !retired.contains_key(&addon.id) {
            self.data.save_retired_addon(&addon.id, &addon.config)?;
            retired.insert(addon.id.clone(), addon.clone());
        }
        Ok(())
    }

    pub(crate) fn is_current(&self, id: &str) -> bool {
        self.addon.load().as_ref().is_some_and(|c| c.id == id)
    }

    /// Drops every kept configuration under which no lease is owed a revocation.
    pub(crate) async fn forget_finished_addons(&self) {
        let mut retired = self.retired.lock().await;
        if retired.is_empty() {
            return;
        }
        let leases = match self.store.leases().await {
            Ok(leases) => leases,
            Err(error) => {
                tracing::warn!(%error, "cannot tell which earlier add-on configurations are still needed");
                return;
            }
        };
        let finished: Vec<String> = retired
            .values()
            .filter(|addon| !leases.iter().any(|l| !l.removed && issued_under(l, addon)))
            .map(|addon| addon.id.clone())
            .collect();
        for id in finished {
            match self.data.remove_retired_addon(&id) {
                Ok(()) => {
                    retired.remove(&id);
                    tracing::info!(addon.id = %id, "earlier add-on configuration dropped: no lease issued under it is owed a revocation");
                }
                Err(error) => {
                    tracing::warn!(addon.id = %id, %error, "cannot drop an earlier add-on configuration")
                }
            }
        }
    }

    /// Drops kept configurations owed nothing whenever a revocation under one of them
    /// asks (see [`Control::forget_now`]), until shutdown.
    pub(crate) async fn forget_loop(&self) {
        loop {
            tokio::select! {
                _ = self.shutdown().cancelled() => return,
                _ = self.forget_now.notified() => self.forget_finished_addons().await,
            }
        }
    }

    /// Sweeps the InfluxDB of every kept configuration for expired credentials this
    /// control created there, then drops the configurations owed nothing. Failures are
    /// logged; the next sweep tries again.
    pub(crate) async fn sweep_retired(&self) {
        let kept: Vec<Arc<Addon>> = self.retired.lock().await.values().cloned().collect();
        for addon in kept {
            match self.sweep_with(&addon.backend).await {
                Ok(removed) => {
                    tracing::debug!(addon.id = %addon.id, removed, "sweep of an earlier add-on's InfluxDB done")
                }
                Err(error) => {
                    tracing::warn!(addon.id = %addon.id, endpoint = %addon.backend.endpoint_url(), %error, "sweep of an earlier add-on's InfluxDB failed")
                }
            }
        }
        self.forget_finished_addons().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use leasehold_channel::Secret;

    fn v1(url: &str, user: &str, password: &str, privilege: &str) -> AddonConfig {
        AddonConfig::InfluxdbV1 {
            endpoint_url: url.into(),
            username: user.into(),
            password: Secret::new(password.to_owned()),
            privileges: vec![privilege.into()],
            default_ttl_secs: None,
            max_ttl_secs: Some(60),
            max_live_leases: None,
            ca_pem: None,
        }
    }

    #[test]
    fn ids_name_the_server_and_principal_not_the_secret_or_terms() {
        let a = addon_id(&v1("http://a:8086", "admin", "p1", "WRITE ON \"x\""));
        assert!(is_addon_id(&a), "{a}");
        assert_eq!(
            a,
            addon_id(&v1("http://a:8086/", "admin", "p2", "READ ON \"y\"")),
            "a rotated password or other grants: the same place to revoke"
        );
        assert_ne!(
            a,
            addon_id(&v1("http://b:8086", "admin", "p1", "WRITE ON \"x\""))
        );
        assert_ne!(
            a,
            addon_id(&v1("http://a:8086", "other", "p1", "WRITE ON \"x\""))
        );
        let v2 = AddonConfig::Influxdb {
            endpoint_url: "http://a:8086".into(),
            token: Secret::new("t".to_owned()),
            org_id: "admin".into(),
            permissions: serde_json::json!([]),
            default_ttl_secs: None,
            max_ttl_secs: None,
            max_live_leases: None,
            ca_pem: None,
        };
        assert_ne!(a, addon_id(&v2), "the backend is part of the id");
        assert!(!is_addon_id("0123"));
        assert!(!is_addon_id("0123456789abcdeg"));
    }
}
