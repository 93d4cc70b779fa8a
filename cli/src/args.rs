//! The command line, as clap sees it.

use std::path::PathBuf;

use clap::{ArgGroup, Args, Parser, Subcommand};

/// Exit codes, one per error class; printed in `--help`.
pub const EXIT_CODES: &str = "\
Exit codes:
   0  success
   2  usage error (bad command line, or a form snaptree refuses)
   3  I/O                a file named on the command line cannot be read, or stdout
                         cannot be written (was 23; a reader closing the pipe is not
                         an error: the command ends quietly with 0, its work done)
  11  INVALID_ARG        an argument is invalid (bad name, flags)
  12  XML_ERROR          an XML document is malformed or refused
  13  NO_DOMAIN          no such domain
  14  NO_SNAPSHOT        no such snapshot
  15  SNAPSHOT_EXISTS    the name or uuid is taken
  16  WOULD_DISCARD      the delete would discard other snapshots; use a FORCE mode
  17  OPERATION_INVALID  the backend cannot do this (in this power state)
  18  BACKEND            the backend failed
  19  PLUGIN             a backend plugin cannot be loaded
  20  STORAGE            the metadata store failed
  21  BUSY               another operation holds the domain
  22  INTERNAL           a bug in snaptree
  23  INCOMPLETE         stopped part-way; the next command or `recover` finishes it
  24  NO_SPACE           the operation does not fit on a file system; nothing ran";

/// snaptree: hypervisor-agnostic VM snapshot trees.
#[derive(Debug, Parser)]
#[command(name = "snaptree", version, about, after_help = EXIT_CODES)]
pub struct Cli {
    /// The state directory (default: $SNAPTREE_STATE_DIR, else $XDG_DATA_HOME/snaptree).
    #[arg(long, global = true, value_name = "DIR", conflicts_with = "store")]
    pub state_dir: Option<PathBuf>,
    /// The store: a state directory, or a `postgresql://` URI that several hosts share
    /// (default: $SNAPTREE_STORE, else the state directory).
    #[arg(long, global = true, value_name = "DIR|URI")]
    pub store: Option<String>,
    /// A backend plugin file or directory to search first (repeatable).
    #[arg(long, global = true, value_name = "PATH")]
    pub backend_path: Vec<PathBuf>,
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// `snaptree store ...`.
#[derive(Debug, Subcommand)]
pub enum StoreCommand {
    /// Move a host's SQLite state (every domain, its snapshots and any pending operation)
    /// into a PostgreSQL store, in one transaction; the source is left as it was.
    Migrate {
        /// The state directory to copy from.
        #[arg(long, value_name = "DIR")]
        from: PathBuf,
        /// The PostgreSQL store to copy into (`postgresql://...`).
        #[arg(long, value_name = "URI")]
        to: String,
    },
}

/// Options of every mutating snapshot command.
#[derive(Debug, Args, Clone, Copy)]
pub struct DryRun {
    /// Print the plan (steps, snapshots removed, where current moves) and change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// How `snapshot-list` selects, orders and shows: virsh's options, and the pairs virsh 9.0
/// refuses refused alike (a usage error). Without `--topological` the order is by name.
#[derive(Debug, Args)]
#[command(group(ArgGroup::new("start").args(["from", "current"])))]
pub struct ListOpts {
    /// Add a Parent column.
    #[arg(long, conflicts_with_all = ["roots", "tree"])]
    pub parent: bool,
    /// Only snapshots without a parent.
    #[arg(long, conflicts_with_all = ["tree", "from", "current"])]
    pub roots: bool,
    /// Only snapshots without children.
    #[arg(long, conflicts_with = "tree")]
    pub leaves: bool,
    /// Only snapshots with children.
    #[arg(long, conflicts_with = "tree")]
    pub no_leaves: bool,
    /// Show an indented tree, as `virsh snapshot-list --tree` (with --from or --current:
    /// the tree under that snapshot).
    #[arg(long, conflicts_with_all = ["name", "json"])]
    pub tree: bool,
    /// Only the children of this snapshot.
    #[arg(long, value_name = "NAME")]
    pub from: Option<String>,
    /// Only the children of the current snapshot.
    #[arg(long)]
    pub current: bool,
    /// With --from or --current: every descendant, not only the children.
    #[arg(long, requires = "start")]
    pub descendants: bool,
    /// Names only, one a line.
    #[arg(long, conflicts_with = "json")]
    pub name: bool,
    /// Parents before children, instead of by name.
    #[arg(long)]
    pub topological: bool,
    /// Print JSON (see the README for the fields).
    #[arg(long)]
    pub json: bool,
    /// Add what each snapshot holds, as its backend estimates it: Held (bytes only its
    /// data holds) and Frees (bytes a --consolidate delete of it would free); in JSON,
    /// `held_bytes` and `frees_bytes` (null: the backend cannot estimate).
    #[arg(long, conflicts_with_all = ["tree", "name"])]
    pub size: bool,
}

/// The delete mode flags, as virsh spells them.
#[derive(Debug, Args, Clone, Copy)]
#[group(multiple = false)]
pub struct DeleteModeArgs {
    /// Merge into the parent (refused when the parent has other children).
    #[arg(long)]
    pub merge: bool,
    /// Merge into the parent after discarding its other children.
    #[arg(long)]
    pub mergeforce: bool,
    /// Discard the snapshot (refused when it has children).
    #[arg(long)]
    pub delete: bool,
    /// Discard the snapshot and all its descendants.
    #[arg(long)]
    pub deleteforce: bool,
    /// Remove the snapshot, pushing its data into whatever depended on it.
    #[arg(long)]
    pub consolidate: bool,
    /// Discard every descendant, keep the snapshot.
    #[arg(long)]
    pub children_only: bool,
}

/// The power state a revert leaves the domain in.
#[derive(Debug, Args, Clone, Copy)]
#[group(multiple = false)]
pub struct RevertStateArgs {
    /// Leave the domain running.
    #[arg(long)]
    pub running: bool,
    /// Leave the domain paused.
    #[arg(long)]
    pub paused: bool,
    /// Leave the domain shut off.
    #[arg(long)]
    pub shutoff: bool,
}

/// Every subcommand.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Define (or update) a domain from a `<domain>` XML file.
    Define {
        /// The XML file.
        file: PathBuf,
    },
    /// Remove a domain's definition.
    Undefine {
        /// The domain.
        domain: String,
        /// Delete its snapshots (and their data) first.
        #[arg(long)]
        delete_snapshots: bool,
    },
    /// List the defined domains.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Finish an operation that stopped part-way (exit code 23, INCOMPLETE) and say what
    /// was finished.
    Recover {
        /// The domain.
        domain: String,
    },
    /// Manage the store itself.
    Store {
        /// What to do.
        #[command(subcommand)]
        action: StoreCommand,
    },
    /// List the backend plugins on the search path and whether each loads.
    Backends {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Create a snapshot from a `<domainsnapshot>` XML file (none: `<domainsnapshot/>`).
    ///
    /// With --redefine, import a snapshot's whole metadata instead (SEMANTICS.md §7.3):
    /// `virsh snapshot-dumpxml` output or `snaptree export` output as it is; the backend
    /// adopts the data it already holds, the live state is not frozen.
    SnapshotCreate {
        /// The domain.
        domain: String,
        /// The XML file.
        #[arg(required_if_eq("redefine", "true"))]
        file: Option<PathBuf>,
        /// Import the snapshot's metadata (name, uuid, parent, creation date, state,
        /// description) and adopt its existing data.
        #[arg(long)]
        redefine: bool,
        /// With --redefine: make the snapshot current.
        #[arg(long, requires = "redefine")]
        current: bool,
        #[command(flatten)]
        #[allow(missing_docs)]
        dry: DryRun,
    },
    /// Create a snapshot from a name and description.
    SnapshotCreateAs {
        /// The domain.
        domain: String,
        /// The name (default: the creation time).
        #[arg(long)]
        name: Option<String>,
        /// The description.
        #[arg(long)]
        description: Option<String>,
        /// When the snapshot expires (`prune` deletes it from then on): a duration from
        /// now (30m, 12h, 7d, 2w, 1y, or several: 1d12h) or a UTC date (2027-01-31,
        /// 2027-01-31T18:00[:00][Z], @UNIXSECONDS).
        #[arg(long, value_name = "DURATION|DATE")]
        expires: Option<String>,
        /// Pin the snapshot: `prune` never deletes it.
        #[arg(long)]
        pin: bool,
        /// Name the snapshot from the time (auto-YYYYMMDDTHHMMSSZ), for timers.
        #[arg(long, conflicts_with = "name")]
        auto: bool,
        #[command(flatten)]
        #[allow(missing_docs)]
        dry: DryRun,
    },
    /// Take a snapshot named from the time (auto-YYYYMMDDTHHMMSSZ), for cron and systemd
    /// timers (docs/retention.md); `snaptree prune` then keeps what the policy says.
    SnapshotAuto {
        /// The domain.
        domain: String,
        /// When the snapshot expires, as for snapshot-create-as.
        #[arg(long, value_name = "DURATION|DATE")]
        expires: Option<String>,
    },
    /// Pin a snapshot (`prune` never deletes it), or unpin it.
    SnapshotPin {
        /// The domain.
        domain: String,
        /// The snapshot.
        name: String,
        /// Unpin instead.
        #[arg(long)]
        unpin: bool,
    },
    /// Set or show a domain's retention policy (SEMANTICS.md §7.5). Rules are KEY=COUNT:
    /// last=N keeps the newest N snapshots; hourly, daily, weekly, monthly, yearly=N keep
    /// the newest snapshot of each of the N most recent such periods (UTC) that have one.
    /// Without rules it shows the policy. Pinned snapshots and the current one are never
    /// pruned.
    Policy {
        /// The domain.
        domain: String,
        /// The rules, replacing the whole policy.
        #[arg(value_name = "KEY=COUNT", conflicts_with = "clear")]
        rules: Vec<String>,
        /// Remove the policy (prune then deletes only expired snapshots).
        #[arg(long)]
        clear: bool,
        /// Show the policy as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Delete, with CONSOLIDATE, every expired snapshot and every snapshot outside the
    /// retention policy; never the current snapshot, never a pinned one. Each delete is
    /// its own operation; survivors' contents and the live state are unchanged. Prints the
    /// bytes each delete frees where the backend can estimate them.
    #[command(group(ArgGroup::new("which").args(["domain", "all"]).required(true)))]
    Prune {
        /// The domain.
        domain: Option<String>,
        /// Prune every domain; one that fails does not stop the others (the exit code is
        /// the first failure's).
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        #[allow(missing_docs)]
        dry: DryRun,
    },
    /// List a domain's snapshots, as `virsh snapshot-list` does.
    ///
    /// By name (ASCII case-insensitive) unless --topological. Refused as virsh 9.0 refuses
    /// them (usage error, exit 2): --tree with --name, --parent, --roots, --leaves or
    /// --no-leaves; --roots with --parent, --from or --current; --from with --current;
    /// --descendants without --from or --current. --json goes with every selection option,
    /// not with --tree or --name.
    SnapshotList {
        /// The domain.
        domain: String,
        #[command(flatten)]
        #[allow(missing_docs)]
        opts: ListOpts,
    },
    /// Print a snapshot's XML.
    SnapshotDumpxml {
        /// The domain.
        domain: String,
        /// The snapshot.
        name: String,
    },
    /// Print a snapshot's information, as `virsh snapshot-info` does.
    ///
    /// Location: external (a disk keeps snapshots as layer files beside it), internal
    /// (inside the disk images, or kept by the backend itself), none (a metadata-only
    /// backend keeps no data). Metadata is always yes.
    #[command(
        group(ArgGroup::new("which").args(["name", "current"]).required(true)),
        override_usage = "snaptree snapshot-info [OPTIONS] <DOMAIN> <NAME|--current>"
    )]
    SnapshotInfo {
        /// The domain.
        domain: String,
        /// The snapshot.
        name: Option<String>,
        /// The current snapshot.
        #[arg(long)]
        current: bool,
    },
    /// Print the current snapshot's XML (with --name: its name).
    ///
    /// Naming a snapshot to make it current, as virsh allows, is refused (exit 2): the
    /// current snapshot is the one the live state derives from (SEMANTICS.md §1), so only
    /// a revert moves it.
    SnapshotCurrent {
        /// The domain.
        domain: String,
        /// Print only the name.
        #[arg(long)]
        name: bool,
        /// Refused (virsh would make this snapshot current without reverting).
        #[arg(value_name = "SNAPSHOT")]
        snapshotname: Option<String>,
    },
    /// Print a snapshot's parent's name.
    SnapshotParent {
        /// The domain.
        domain: String,
        /// The snapshot.
        name: String,
    },
    /// Revert the domain to a snapshot.
    #[command(alias = "snapshot-revert")]
    StartWithSnapshot {
        /// The domain.
        domain: String,
        /// The snapshot.
        name: String,
        #[command(flatten)]
        #[allow(missing_docs)]
        state: RevertStateArgs,
        /// First snapshot the live state (SEMANTICS.md §7.4), as NAME or
        /// pre-revert-<creationdate>: one operation, so undoing the revert is a revert to it.
        #[arg(long, value_name = "NAME", num_args = 0..=1, default_missing_value = "", require_equals = true)]
        keep_live: Option<String>,
        #[command(flatten)]
        #[allow(missing_docs)]
        dry: DryRun,
    },
    /// Rename a snapshot.
    SnapshotRename {
        /// The domain.
        domain: String,
        /// The snapshot.
        name: String,
        /// The new name.
        new_name: String,
        #[command(flatten)]
        #[allow(missing_docs)]
        dry: DryRun,
    },
    /// Delete a snapshot. No mode flag retires it: it leaves the metadata, its children
    /// move to its parent, and its data stays where it is.
    SnapshotDelete {
        /// The domain.
        domain: String,
        /// The snapshot.
        name: String,
        #[command(flatten)]
        #[allow(missing_docs)]
        mode: DeleteModeArgs,
        #[command(flatten)]
        #[allow(missing_docs)]
        dry: DryRun,
    },
    /// Delete every snapshot of a domain; the live state is kept.
    SnapshotDeleteAll {
        /// The domain.
        domain: String,
        #[command(flatten)]
        #[allow(missing_docs)]
        dry: DryRun,
    },
    /// Free the data of every retired snapshot (deleted without a flag while something
    /// was stored on it), consolidating it into what depends on it; every snapshot and the
    /// live state keep their content.
    Reclaim {
        /// The domain.
        domain: String,
        #[command(flatten)]
        #[allow(missing_docs)]
        dry: DryRun,
    },
    /// Print every snapshot's XML, parents first, in the form `virsh snapshot-create
    /// --redefine` (and `snaptree snapshot-create --redefine`) accepts. libvirt needs the
    /// domain's whole definition in each document: pass `virsh dumpxml` output with
    /// --domain-xml. The current snapshot carries `<active>1</active>`.
    Export {
        /// The domain.
        domain: String,
        /// A libvirt `<domain>` document to embed in every snapshot's XML.
        #[arg(long)]
        domain_xml: Option<PathBuf>,
        /// Write one file per snapshot, 0001.xml, 0002.xml, … in this directory (parents
        /// first), and print their paths.
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Import a domain's snapshot metadata from libvirt's XML: the domain document and
    /// the snapshots' documents (files, or libvirt's snapshot directory), parents first,
    /// current from `<active>1</active>` or --current. Imports into the snaptree domain of
    /// that name when defined (any backend), else defines a `null` domain (libvirt's test
    /// driver, or --backend null) or, for a kvm/qemu domain, a `qemu` domain over its qcow2
    /// disks whose internal snapshots and external overlays are adopted as they are.
    ImportLibvirt {
        /// libvirt's domain XML (`virsh dumpxml DOMAIN`).
        domain_xml: PathBuf,
        /// Snapshot XML files (`virsh snapshot-dumpxml`) or directories of them.
        #[arg(required = true)]
        snapshots: Vec<PathBuf>,
        /// The backend of a domain not defined yet: `null` (metadata only), or `qemu` for a
        /// kvm/qemu domain (the default for one).
        #[arg(long)]
        backend: Option<String>,
        /// The snapshot to make current, instead of the one marked `<active>1</active>`.
        #[arg(long)]
        current: Option<String>,
        /// A kvm/qemu domain: a QMP socket QEMU listens on for snaptree (live mode); without
        /// one the domain is offline, since libvirt owns QEMU's monitor.
        #[arg(long)]
        qmp_socket: Option<PathBuf>,
        #[command(flatten)]
        #[allow(missing_docs)]
        dry: DryRun,
    },
    /// Rebuild a lost state directory from the disks alone: define the domain from its
    /// snaptree XML, read the manifest its backend keeps beside the data (the QEMU
    /// backend's `<image>.snaptree-manifest.xml`), and redefine every snapshot parents
    /// first with its name, description, date, state and current. Refused when the store
    /// still holds snapshots of the domain.
    Adopt {
        /// The domain's snaptree XML (as `snaptree define` took it).
        domain_xml: PathBuf,
        #[command(flatten)]
        #[allow(missing_docs)]
        dry: DryRun,
    },
    /// Print shell completions.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
}
