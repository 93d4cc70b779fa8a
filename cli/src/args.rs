//! The command line, as clap sees it.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Exit codes, one per error class; printed in `--help`.
pub const EXIT_CODES: &str = "\
Exit codes:
   0  success
   2  usage error (bad command line)
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
  23  I/O                a file named on the command line cannot be read";

/// snaptree: hypervisor-agnostic VM snapshot trees.
#[derive(Debug, Parser)]
#[command(name = "snaptree", version, about, after_help = EXIT_CODES)]
pub struct Cli {
    /// The state directory (default: $SNAPTREE_STATE_DIR, else $XDG_DATA_HOME/snaptree).
    #[arg(long, global = true, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// A backend plugin file or directory to search first (repeatable).
    #[arg(long, global = true, value_name = "PATH")]
    pub backend_path: Vec<PathBuf>,
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// Options of every mutating snapshot command.
#[derive(Debug, Args, Clone, Copy)]
pub struct DryRun {
    /// Print the plan (steps, snapshots removed, where current moves) and change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// How `snapshot-list` shows and filters.
#[derive(Debug, Args)]
pub struct ListOpts {
    /// Show an indented tree, like `virsh snapshot-list --tree`.
    #[arg(long, conflicts_with_all = ["roots", "leaves", "topological"])]
    pub tree: bool,
    /// Only snapshots without a parent.
    #[arg(long, conflicts_with_all = ["leaves", "topological"])]
    pub roots: bool,
    /// Only snapshots without children.
    #[arg(long, conflicts_with = "topological")]
    pub leaves: bool,
    /// Parents before children.
    #[arg(long)]
    pub topological: bool,
    /// Print JSON (see the README for the fields).
    #[arg(long)]
    pub json: bool,
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
    /// List the backend plugins on the search path and whether each loads.
    Backends {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Create a snapshot from a `<domainsnapshot>` XML file (none: `<domainsnapshot/>`).
    SnapshotCreate {
        /// The domain.
        domain: String,
        /// The XML file.
        file: Option<PathBuf>,
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
        #[command(flatten)]
        #[allow(missing_docs)]
        dry: DryRun,
    },
    /// List a domain's snapshots.
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
    /// Print the current snapshot's name.
    SnapshotCurrent {
        /// The domain.
        domain: String,
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
    /// Print shell completions.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
}
