//! The operations over the in-memory store: who may call what, and what each
//! operation writes (or, refused, does not).

use std::collections::BTreeMap;
use std::sync::Arc;

use leasehold_channel::{Identity, PublicIdentity, Secret};
use leasehold_protocol::{
    AddonConfig, Grant, LeaseStatus, MemberRecord, PolicySpec, Reply, Request, Timestamp,
};
use tokio_util::sync::CancellationToken;

use super::{Role, required_role};
use crate::control::Control;
use crate::datadir::DataDir;
use crate::error::ControlError;
use crate::store::{MemoryStore, Store};

struct Harness {
    _dir: tempfile::TempDir,
    control: Arc<Control<MemoryStore>>,
    store: MemoryStore,
    admin: PublicIdentity,
    shutdown: CancellationToken,
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

pub(crate) fn record(id: PublicIdentity, name: &str, attributes: &[(&str, &str)]) -> MemberRecord {
    MemberRecord {
        id,
        name: name.into(),
        attributes: attributes
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        enrolled_at: Timestamp(1),
    }
}

async fn harness() -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let store = MemoryStore::new();
    let admin = Identity::generate().public();
    store
        .put_member(record(admin, "admin", &[("role", "admin")]))
        .await
        .unwrap();
    let shutdown = CancellationToken::new();
    let control = Control::start(
        Identity::generate(),
        store.clone(),
        DataDir::new(dir.path()),
        vec!["127.0.0.1:4100".into()],
        shutdown.clone(),
    )
    .await
    .unwrap();
    Harness {
        _dir: dir,
        control,
        store,
        admin,
        shutdown,
    }
}

impl Harness {
    async fn member(&self, name: &str, attributes: &[(&str, &str)]) -> PublicIdentity {
        let id = Identity::generate().public();
        self.store
            .put_member(record(id, name, attributes))
            .await
            .unwrap();
        id
    }

    async fn as_admin(&self, req: Request) -> Result<Reply, ControlError> {
        self.control.handle(self.admin, req).await
    }

    /// A v1 add-on nobody listens for (port 1 refuses at once), installed unverified.
    async fn configure_unreachable_addon(&self, max_live_leases: Option<u32>) {
        let addon = AddonConfig::InfluxdbV1 {
            endpoint_url: "http://127.0.0.1:1".into(),
            username: "admin".into(),
            password: Secret::new("pw"),
            privileges: vec!["WRITE ON db".into()],
            default_ttl_secs: Some(60),
            max_ttl_secs: Some(600),
            max_live_leases,
            ca_pem: None,
        };
        let reply = self
            .as_admin(Request::AddonConfigure {
                addon,
                skip_verify: true,
            })
            .await
            .unwrap();
        assert!(matches!(reply, Reply::Addon(_)));
    }
}

/// One request of every kind, with arguments that would change something if allowed.
fn every_request(someone: PublicIdentity) -> Vec<Request> {
    let id = someone.to_string();
    vec![
        Request::Ping,
        Request::Enroll {
            secret: Secret::new("x"),
            name: "n".into(),
        },
        Request::LeaseCreate { ttl_secs: None },
        Request::LeaseList,
        Request::LeasePage {
            status: None,
            member: Some(id.clone()),
            after: None,
            limit: 10,
        },
        Request::LeaseShow {
            id: "0000000000000001".into(),
        },
        Request::LeaseRevoke {
            id: "0000000000000001".into(),
        },
        Request::AddonConfigure {
            addon: AddonConfig::InfluxdbV1 {
                endpoint_url: "http://127.0.0.1:1".into(),
                username: "admin".into(),
                password: Secret::new("pw"),
                privileges: vec!["WRITE ON db".into()],
                default_ttl_secs: None,
                max_ttl_secs: None,
                max_live_leases: None,
                ca_pem: None,
            },
            skip_verify: true,
        },
        Request::PolicySet {
            policy: PolicySpec {
                matches: BTreeMap::from([("service".into(), "iot".into())]),
                grant: Grant::Privileges(vec!["WRITE ON iot".into()]),
                default_ttl_secs: None,
                max_ttl_secs: None,
                max_live_leases: None,
            },
        },
        Request::PolicyList,
        Request::PolicyDelete {
            id: "service=iot".into(),
        },
        Request::TicketCreate {
            attributes: BTreeMap::new(),
            expires_in_secs: 60,
            usage_count: 1,
        },
        Request::TicketList,
        Request::TicketRevoke {
            id: "0123456789abcdef".into(),
        },
        Request::MemberList,
        Request::MemberShow { id: id.clone() },
        Request::MemberDelete { id: id.clone() },
        Request::MemberAllow { id },
    ]
}

#[tokio::test]
async fn every_request_is_checked_against_the_table_and_a_refusal_changes_nothing() {
    let h = harness().await;
    let member = h.member("m", &[("service", "iot")]).await;
    let stranger = Identity::generate().public();
    for req in every_request(member) {
        let role = required_role(&req);
        let name = format!("{req:?}");
        let as_stranger = h.control.handle(stranger, clone(&req)).await;
        let as_member = h.control.handle(member, clone(&req)).await;
        match role {
            Role::Anyone => {}
            Role::Member => {
                assert!(
                    matches!(as_stranger, Err(ControlError::NotMember)),
                    "{name}: {as_stranger:?}"
                );
                assert!(
                    !matches!(
                        as_member,
                        Err(ControlError::NotMember | ControlError::NotAdmin)
                    ),
                    "{name}"
                );
            }
            Role::Admin => {
                assert!(
                    matches!(as_stranger, Err(ControlError::NotMember)),
                    "{name}: {as_stranger:?}"
                );
                assert!(
                    matches!(as_member, Err(ControlError::NotAdmin)),
                    "{name}: {as_member:?}"
                );
            }
        }
    }
    // No admin operation went through for the member or the stranger.
    assert!(h.control.addon.load_full().is_none());
    assert!(h.store.policies().await.unwrap().is_empty());
    assert!(h.store.tickets().await.unwrap().is_empty());
    assert!(h.store.member(member).await.unwrap().is_some());
    assert!(h.store.denied().await.unwrap().is_empty());
    assert!(matches!(
        h.control.handle(stranger, Request::Ping).await,
        Ok(Reply::Pong { .. })
    ));
}

/// Requests are not `Clone` (they may carry secrets); the test makes its copies
/// through the wire form, as a peer would send them.
fn clone(req: &Request) -> Request {
    let json = serde_json::to_string(req).unwrap();
    serde_json::from_str(&json).unwrap()
}

#[tokio::test]
async fn a_ticket_enrolls_once_and_a_deleted_member_stays_out_until_allowed() {
    let h = harness().await;
    let Reply::Ticket(ticket) = h
        .as_admin(Request::TicketCreate {
            attributes: BTreeMap::from([("service".into(), "iot".into())]),
            expires_in_secs: 600,
            usage_count: 1,
        })
        .await
        .unwrap()
    else {
        panic!("not a ticket")
    };
    let line: leasehold_channel::ticket::Ticket = ticket.ticket.expose().parse().unwrap();
    let secret = leasehold_channel::ticket::encode_secret(&line.secret);
    let Reply::Tickets { tickets } = h.as_admin(Request::TicketList).await.unwrap() else {
        panic!("not tickets")
    };
    assert_eq!(tickets.len(), 1);
    assert_eq!(tickets[0].id, ticket.id);

    let newcomer = Identity::generate().public();
    let enroll = |name: &str| Request::Enroll {
        secret: Secret::new(secret.expose().to_owned()),
        name: name.into(),
    };
    let bad_name = h.control.handle(newcomer, enroll("a b")).await;
    assert!(
        matches!(bad_name, Err(ControlError::BadRequest(_))),
        "{bad_name:?}"
    );
    let Reply::Member(enrolled) = h.control.handle(newcomer, enroll("sensor")).await.unwrap()
    else {
        panic!("not a member")
    };
    assert_eq!(
        enrolled.attributes.get("service").map(String::as_str),
        Some("iot")
    );
    let again = h
        .control
        .handle(Identity::generate().public(), enroll("other"))
        .await;
    assert!(
        matches!(again, Err(ControlError::Ticket(_))),
        "one use only: {again:?}"
    );

    let id = newcomer.to_string();
    assert!(matches!(
        h.as_admin(Request::MemberShow { id: id.clone() }).await,
        Ok(Reply::Member(_))
    ));
    assert!(matches!(
        h.as_admin(Request::MemberShow { id: "nope".into() }).await,
        Err(ControlError::BadRequest(_))
    ));
    h.as_admin(Request::MemberDelete { id: id.clone() })
        .await
        .unwrap();
    assert!(matches!(
        h.control.handle(newcomer, Request::LeaseList).await,
        Err(ControlError::NotMember)
    ));
    let Reply::Members { members, denied } = h.as_admin(Request::MemberList).await.unwrap() else {
        panic!("not members")
    };
    assert_eq!((members.len(), denied.len()), (1, 1));
    h.as_admin(Request::MemberAllow { id: id.clone() })
        .await
        .unwrap();
    assert!(matches!(
        h.as_admin(Request::MemberAllow { id }).await,
        Err(ControlError::NotFound(_))
    ));
    assert!(matches!(
        h.as_admin(Request::TicketRevoke {
            id: "0123456789abcdef".into()
        })
        .await,
        Err(ControlError::NotFound("ticket"))
    ));
}

#[tokio::test]
async fn policies_need_the_addon_and_its_kind_of_grant() {
    let h = harness().await;
    let spec = |grant| PolicySpec {
        matches: BTreeMap::from([("service".into(), "iot".into())]),
        grant,
        default_ttl_secs: Some(30),
        max_ttl_secs: Some(120),
        max_live_leases: Some(2),
    };
    let privileges = Grant::Privileges(vec!["write on iot".into()]);
    let early = h
        .as_admin(Request::PolicySet {
            policy: spec(privileges.clone()),
        })
        .await;
    assert!(
        matches!(early, Err(ControlError::BadRequest(_))),
        "{early:?}"
    );
    h.configure_unreachable_addon(None).await;
    let wrong = h
        .as_admin(Request::PolicySet {
            policy: spec(Grant::Permissions(serde_json::json!([]))),
        })
        .await;
    assert!(
        matches!(wrong, Err(ControlError::BadRequest(_))),
        "{wrong:?}"
    );
    let Reply::Policy(set) = h
        .as_admin(Request::PolicySet {
            policy: spec(privileges),
        })
        .await
        .unwrap()
    else {
        panic!("not a policy")
    };
    assert_eq!(set.id, "service=iot");
    assert_eq!(
        set.spec.grant,
        Grant::Privileges(vec!["WRITE ON \"iot\"".into()]),
        "stored canonical"
    );
    assert_eq!(h.store.policies().await.unwrap().len(), 1);
    h.as_admin(Request::PolicyDelete { id: set.id.clone() })
        .await
        .unwrap();
    assert!(matches!(
        h.as_admin(Request::PolicyDelete { id: set.id }).await,
        Err(ControlError::NotFound("policy"))
    ));
}

#[tokio::test]
async fn lease_refusals_write_nothing_and_a_failed_create_leaves_its_intent_only() {
    let h = harness().await;
    let member = h.member("m", &[]).await;
    let create = |ttl_secs| Request::LeaseCreate { ttl_secs };
    assert!(matches!(
        h.control.handle(member, create(None)).await,
        Err(ControlError::NoAddon)
    ));
    h.configure_unreachable_addon(Some(1)).await;
    let Err(ControlError::BadRequest(too_long)) = h.control.handle(member, create(Some(601))).await
    else {
        panic!("a TTL above the max is refused")
    };
    assert!(too_long.contains("600"), "names the limit: {too_long}");
    assert!(
        h.store.leases().await.unwrap().is_empty(),
        "a refusal writes nothing"
    );

    // InfluxDB unreachable: the intent stays (it may have been created), the place
    // under the cap of one is given back, so the next attempt fails the same way.
    for _ in 0..2 {
        let failed = h.control.handle(member, create(Some(60))).await;
        assert!(
            matches!(failed, Err(ControlError::Backend(_))),
            "{failed:?}"
        );
    }
    let intents = h.store.leases().await.unwrap();
    assert_eq!(intents.len(), 2);
    assert!(
        intents
            .iter()
            .all(|l| !l.issued && !l.removed && l.member == member)
    );
    assert!(
        intents[0].credential_id.contains(&intents[0].id),
        "found again by name"
    );

    // Intents are no lease anyone holds: not listed, not shown.
    let Reply::Leases { leases } = h.control.handle(member, Request::LeaseList).await.unwrap()
    else {
        panic!("not leases")
    };
    assert!(leases.is_empty());
    let show = h
        .control
        .handle(
            member,
            Request::LeaseShow {
                id: intents[0].id.clone(),
            },
        )
        .await;
    assert!(
        matches!(show, Err(ControlError::NotFound("lease"))),
        "{show:?}"
    );
    let others = Request::LeasePage {
        status: Some(LeaseStatus::Active),
        member: Some(h.admin.to_string()),
        after: None,
        limit: 10,
    };
    assert!(matches!(
        h.control.handle(member, others).await,
        Err(ControlError::Forbidden(_))
    ));
}
