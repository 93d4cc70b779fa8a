//! The plugin `libsnaptree_backend_libvirt.so` as `cargo test -p snaptree-backend-libvirt`
//! builds it: with the conformance kit's test hooks, which only the tests' build has (the
//! feature `test-hooks`, turned on by the crate's dev-dependency on itself). A release
//! build of the plugin reports `test_hooks: false` in `snaptree backends --json`.

mod common;

#[test]
fn the_test_build_of_the_plugin_has_test_hooks() {
    let p = common::plugin();
    assert_eq!(p.name(), "libvirt");
    assert!(
        p.has_test_hooks(),
        "the plugin the tests load must offer content digests and guest writes"
    );
}
