//! `dfs xattr`: list, read, set and remove a remote entry's extended attributes, the same
//! ones the mount shows with `getfattr`/`setfattr`.

use crate::common::CliError;
use clap::Args;
use dfs_client::blocking::Client;
use dfs_proto::xattr::SetMode;
use std::io::{self, Write};

/// `dfs xattr`.
#[derive(Args, Debug)]
#[command(after_help = "Examples:
  dfs xattr /docs/report.pdf                              # the names, one a line
  dfs xattr /docs/report.pdf user.author                  # one value, raw on stdout
  dfs xattr /docs/report.pdf user.author --set alice
  dfs xattr /docs/report.pdf user.author --set bob --replace
  dfs xattr /docs/report.pdf user.author --remove")]
pub struct XattrArgs {
    /// The remote file or directory.
    #[arg(value_name = "REMOTE")]
    pub path: String,
    /// The attribute (`user.*`, `trusted.*` or `security.*`); without it, list the names.
    #[arg(value_name = "NAME")]
    pub name: Option<String>,
    /// Set the attribute to this value.
    #[arg(
        long,
        value_name = "VALUE",
        requires = "name",
        conflicts_with = "remove"
    )]
    pub set: Option<String>,
    /// With --set: fail if the attribute exists (XATTR_CREATE).
    #[arg(long, requires = "set", conflicts_with = "replace")]
    pub create: bool,
    /// With --set: fail unless the attribute exists (XATTR_REPLACE).
    #[arg(long, requires = "set")]
    pub replace: bool,
    /// Remove the attribute.
    #[arg(long, requires = "name")]
    pub remove: bool,
}

/// Runs `dfs xattr`.
pub fn xattr(client: &Client, args: &XattrArgs) -> Result<(), CliError> {
    let subject = match &args.name {
        Some(name) => format!("{} {name}", args.path),
        None => args.path.clone(),
    };
    let fail = |err: io::Error| CliError::io(&subject, &err);
    let mut out = io::stdout().lock();
    let written = match (&args.name, &args.set) {
        (None, _) => {
            let names = client.list_xattr(&args.path).map_err(fail)?;
            names.iter().try_for_each(|n| writeln!(out, "{n}"))
        }
        (Some(name), Some(value)) => {
            let mode = if args.create {
                SetMode::Create
            } else if args.replace {
                SetMode::Replace
            } else {
                SetMode::Any
            };
            return client
                .set_xattr(&args.path, name, value.as_bytes(), mode)
                .map_err(fail);
        }
        (Some(name), None) if args.remove => {
            return client.remove_xattr(&args.path, name).map_err(fail);
        }
        (Some(name), None) => {
            let value = client.get_xattr(&args.path, name).map_err(fail)?;
            out.write_all(&value)
        }
    };
    written
        .and_then(|()| out.flush())
        .map_err(|err| CliError::io("stdout", &err))
}
