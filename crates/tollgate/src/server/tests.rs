//! `StartError`: each failure keeps its cause as its source and says what
//! to check.

use std::error::Error as _;
use std::sync::Arc;

use super::*;

fn config(listen: &str, store: &str) -> Config {
    let yaml = format!("listen: {listen}\nadmin_key: k\nstore: {store}\ncounters: memory\n");
    config::load_str(&yaml, "<test>", &|_| None).unwrap()
}

#[tokio::test]
async fn an_address_in_use_is_a_bind_error_with_its_io_source() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = format!("sqlite://{}", dir.path().join("t.db").display());
    let Err(err) = start(
        config(&addr.to_string(), &store),
        None,
        Arc::new(SystemClock),
    )
    .await
    else {
        panic!("started on an address in use");
    };
    assert!(
        matches!(err, StartError::Bind { addr: a, .. } if a == addr),
        "{err:?}"
    );
    assert!(err.to_string().contains(&addr.to_string()), "{err}");
    let io = err
        .source()
        .and_then(|s| s.downcast_ref::<std::io::Error>());
    assert_eq!(
        io.map(std::io::Error::kind),
        Some(std::io::ErrorKind::AddrInUse)
    );
}

#[tokio::test]
async fn an_unusable_store_is_a_store_error_with_its_source() {
    let Err(err) = start(
        config("127.0.0.1:0", "sqlite:///nonexistent-tollgate-dir/t.db"),
        None,
        Arc::new(SystemClock),
    )
    .await
    else {
        panic!("started without a store");
    };
    assert!(matches!(err, StartError::Store(_)), "{err:?}");
    assert!(err.to_string().contains("check `store:`"), "{err}");
    assert!(err.source().is_some(), "the cause is kept: {err:?}");
}
