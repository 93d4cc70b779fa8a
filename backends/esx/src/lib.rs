//! snaptree's ESX backend: the snapshots of one vSphere VM, through the vSphere Web
//! Services (SOAP) API of an ESX host or a vCenter, as the plugin
//! `libsnaptree_backend_esx.so` (domains of `type='esx'`).
//!
//! The domain XML names the endpoint and the VM:
//!
//! ```xml
//! <domain type='esx'>
//!   <name>web01</name>
//!   <esx url='https://vcenter.example/sdk' vm='web01' credentials='/etc/snaptree/vc.cred'/>
//! </domain>
//! ```
//!
//! vSphere snapshots are named by their snaptree uuid; `docs/esx.md` has the whole mapping
//! of steps, what vSphere cannot do, and the test rig (vcsim).
//!
//! Modules, one job each: `xml` (reading replies), `http` (one POST over TCP or TLS),
//! `soap` (envelopes, faults, the session), `config` (the `<esx>` element and credentials),
//! `vim` (typed vSphere calls and tasks), `tree` (the snapshot tree property and uuids),
//! `backend` (the steps).

#![forbid(unsafe_code)]

pub mod backend;
pub mod config;
pub mod http;
pub mod soap;
pub mod tree;
pub mod vim;
pub mod xml;

pub use backend::EsxBackend;
pub use config::EsxConfig;

snaptree_sdk::export_backend!(EsxBackend);
