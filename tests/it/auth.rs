//! AUTH: with a password configured, everything but AUTH/HELLO/QUIT is refused until it is given.

use crate::support::{Node, NodeOptions, data_dir};

#[test]
fn password_is_required_and_checked() {
    let dir = data_dir();
    let options = NodeOptions {
        password: Some("s3cret".into()),
        ..NodeOptions::default()
    };
    let node = Node::start(&dir.path().join("data"), &options);
    let mut c = node.connection();
    let error = redis::cmd("GET")
        .arg("k")
        .query::<Option<String>>(&mut c)
        .expect_err("unauthenticated");
    assert!(error.to_string().contains("NOAUTH"), "{error}");
    let error = redis::cmd("AUTH")
        .arg("wrong")
        .query::<()>(&mut c)
        .expect_err("wrong password");
    assert!(error.to_string().contains("WRONGPASS"), "{error}");
    let error = redis::cmd("SET")
        .arg("k")
        .arg("v")
        .query::<()>(&mut c)
        .expect_err("still unauthenticated");
    assert!(error.to_string().contains("NOAUTH"), "{error}");
    let () = redis::cmd("AUTH")
        .arg("s3cret")
        .query(&mut c)
        .expect("AUTH");
    let () = redis::cmd("SET")
        .arg("k")
        .arg("v")
        .query(&mut c)
        .expect("SET after AUTH");

    // The client library's own AUTH (password in the URL).
    let mut authed = node.connection_with(Some("s3cret"));
    let value: String = redis::cmd("GET").arg("k").query(&mut authed).expect("GET");
    assert_eq!(value, "v");
    let () = redis::cmd("AUTH")
        .arg("default")
        .arg("s3cret")
        .query(&mut authed)
        .expect("AUTH user pass");
}

#[test]
fn auth_without_a_configured_password_is_an_error() {
    let dir = data_dir();
    let node = Node::start(&dir.path().join("data"), &NodeOptions::default());
    let mut c = node.connection();
    let error = redis::cmd("AUTH")
        .arg("x")
        .query::<()>(&mut c)
        .expect_err("no password configured");
    assert!(
        error
            .to_string()
            .contains("without any password configured"),
        "{error}"
    );
}
