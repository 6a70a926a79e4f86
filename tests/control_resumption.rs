//! Resumed channels against a real control (in process, its own listener): a member's
//! next channel resumes with the ticket its last one brought, and is then held to the
//! same rules as one made with a full handshake. A member deleted since its ticket was
//! granted gets "not an enrolled member" and nothing else, and the ticket's end, key
//! and binding are the channel crate's tests (`channel/src/resume.rs`, `conn.rs`).

mod common;

use common::setup::start_in_process;
use leasehold_channel::Identity;
use leasehold_channel::resumption::TicketSlot;
use leasehold_channel::ticket::{Ticket, encode_secret};
use leasehold_control::server::Limits;
use leasehold_protocol::client::{Client, ClientError};
use leasehold_protocol::{ErrorCode, Reply, Request};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_resumes_and_a_deleted_member_cannot() {
    let control = start_in_process(Limits::default()).await;
    let addrs = vec![control.addr.to_string()];
    let pin = control.running.identity;
    let admin = control.home.load_identity("admin").unwrap();
    let mut admin = Client::connect_to(&addrs, &pin, &admin).await.unwrap();
    let Reply::Ticket(ticket) = admin
        .call(Request::TicketCreate {
            attributes: Default::default(),
            expires_in_secs: 600,
            usage_count: 1,
        })
        .await
        .unwrap()
    else {
        panic!("no ticket");
    };
    let ticket: Ticket = ticket.ticket.expose().parse().unwrap();

    // Enrolls on a full handshake, which brings a resumption ticket.
    let app = Identity::generate();
    let mut tickets = TicketSlot::new();
    let mut client = Client::connect_resuming(&addrs, &pin, &app, &mut tickets)
        .await
        .unwrap();
    assert!(!client.resumed());
    let enrolled = client
        .call(Request::Enroll {
            secret: encode_secret(&ticket.secret),
            name: "app".into(),
        })
        .await
        .unwrap();
    assert!(matches!(enrolled, Reply::Member(_)), "{enrolled:?}");
    assert!(
        tickets.ticket().is_some(),
        "the full handshake granted a ticket"
    );
    drop(client);

    // The next channels resume, as the member's.
    for _ in 0..2 {
        let mut client = Client::connect_resuming(&addrs, &pin, &app, &mut tickets)
            .await
            .unwrap();
        assert!(client.resumed());
        client
            .call(Request::LeasePage {
                status: None,
                member: None,
                after: None,
                limit: 1,
            })
            .await
            .expect("a member's request on a resumed channel");
    }

    // Deleted (and so denied): its ticket still opens, but the resumed channel is
    // refused as a non-member's, as after a full handshake.
    admin
        .call(Request::MemberDelete {
            id: app.public().to_string(),
        })
        .await
        .unwrap();
    let mut client = Client::connect_resuming(&addrs, &pin, &app, &mut tickets)
        .await
        .unwrap();
    assert!(client.resumed());
    match client
        .call(Request::LeasePage {
            status: None,
            member: None,
            after: None,
            limit: 1,
        })
        .await
    {
        Err(ClientError::Remote(e)) => assert_eq!(e.code, ErrorCode::Unauthorized, "{e:?}"),
        other => panic!("a deleted member acted on a resumed channel: {other:?}"),
    }
    // And the control closed that channel: nothing more is answered on it.
    assert!(client.call(Request::Ping).await.is_err());
    // Nor does it get anything on a full handshake.
    let mut full = Client::connect_to(&addrs, &pin, &app).await.unwrap();
    assert!(matches!(
        full.call(Request::LeaseList).await,
        Err(ClientError::Remote(e)) if e.code == ErrorCode::Unauthorized
    ));
    control.shutdown.cancel();
}
