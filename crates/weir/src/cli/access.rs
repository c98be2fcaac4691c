//! `weir vhost …` and `weir user …`: vhosts, users and permissions over the HTTP API
//! (docs/SECURITY.md). Changing them needs an administrator's login.

use std::time::Duration;

use hyper::Method;
use serde_json::{json, Value};

use super::client::segment;
use super::output::{cell, table};
use super::{client, pretty, CliError, Connection};

#[derive(clap::Args, Debug)]
pub struct VhostCommand {
    #[command(subcommand)]
    pub action: VhostAction,
    #[command(flatten)]
    pub connection: Connection,
}

#[derive(clap::Subcommand, Debug)]
pub enum VhostAction {
    /// List vhosts.
    List,
    /// Create a vhost, or change its limits (given limits replace the old ones).
    ///
    /// Examples:
    ///   weir vhost create billing
    ///   weir vhost create billing --max-queues 100 --max-connections 50
    ///   weir vhost create billing --max-messages 1000000 --max-bytes 1073741824
    #[command(verbatim_doc_comment)]
    Create {
        name: String,
        /// At most this many queues in the vhost.
        #[arg(long)]
        max_queues: Option<u64>,
        /// At most this many client connections to the vhost.
        #[arg(long)]
        max_connections: Option<u64>,
        /// At most this many messages in the vhost's queues (each queue's copy counts).
        #[arg(long)]
        max_messages: Option<u64>,
        /// At most this many body bytes in the vhost's queues.
        #[arg(long)]
        max_bytes: Option<u64>,
    },
    /// Delete a vhost with its queues, exchanges and permissions; its connections are closed.
    ///
    /// Example:
    ///   weir vhost delete billing
    #[command(verbatim_doc_comment)]
    Delete { name: String },
}

#[derive(clap::Args, Debug)]
pub struct UserCommand {
    #[command(subcommand)]
    pub action: UserAction,
    #[command(flatten)]
    pub connection: Connection,
}

#[derive(clap::Subcommand, Debug)]
pub enum UserAction {
    /// List users with their tags.
    List,
    /// Who the CLI logs in as.
    Whoami,
    /// Create a user.
    ///
    /// Examples:
    ///   weir user add alice --new-password s3cret
    ///   weir user add ops --new-password s3cret --tags administrator
    #[command(verbatim_doc_comment)]
    Add {
        name: String,
        /// The new user's password (hashed by the broker with argon2).
        #[arg(long, value_name = "PASSWORD", hide_env_values = true, env = "WEIR_NEW_PASSWORD")]
        new_password: String,
        /// Comma-separated tags; `administrator` makes an administrator.
        #[arg(long, default_value = "")]
        tags: String,
    },
    /// Change a user's password or tags (what is not given stays).
    ///
    /// Examples:
    ///   weir user set alice --new-password n3w
    ///   weir user set alice --tags administrator
    #[command(verbatim_doc_comment)]
    Set {
        name: String,
        #[arg(long, value_name = "PASSWORD", hide_env_values = true, env = "WEIR_NEW_PASSWORD")]
        new_password: Option<String>,
        #[arg(long)]
        tags: Option<String>,
    },
    /// Delete a user and its permissions; its connections are closed.
    ///
    /// Example:
    ///   weir user delete alice
    #[command(verbatim_doc_comment)]
    Delete { name: String },
    /// Give a user configure, write and read patterns (regular expressions) on a vhost.
    ///
    /// Examples:
    ///   weir user permit alice '.*' '.*' '.*'
    ///   weir user permit alice '^alice-' '^alice-|^amq\.default$' '^alice-' --vhost billing
    #[command(verbatim_doc_comment)]
    Permit {
        name: String,
        configure: String,
        write: String,
        read: String,
        #[arg(long, default_value = "/")]
        vhost: String,
    },
    /// Take a user's permission on a vhost away.
    ///
    /// Example:
    ///   weir user revoke alice --vhost billing
    #[command(verbatim_doc_comment)]
    Revoke {
        name: String,
        #[arg(long, default_value = "/")]
        vhost: String,
    },
    /// List permissions (an administrator sees everyone's).
    Permissions,
}

pub async fn vhost(command: &VhostCommand) -> Result<String, CliError> {
    let c = client(&command.connection)?;
    let none = Duration::ZERO;
    match &command.action {
        VhostAction::List => {
            let vhosts = c.call(Method::GET, "/api/vhosts", None, none).await?;
            if command.connection.json {
                return Ok(pretty(&vhosts));
            }
            let rows: Vec<Vec<String>> =
                vhosts.as_array().into_iter().flatten().map(|v| vec![cell(&v["name"])]).collect();
            Ok(table(&["name"], &rows))
        }
        VhostAction::Create { name, max_queues, max_connections, max_messages, max_bytes } => {
            let mut body = json!({});
            let given = [
                ("max-queues", max_queues),
                ("max-connections", max_connections),
                ("max-messages", max_messages),
                ("max-bytes", max_bytes),
            ];
            let limits: serde_json::Map<String, Value> =
                given.into_iter().filter_map(|(key, n)| Some((key.to_string(), json!((*n)?)))).collect();
            if !limits.is_empty() {
                body["limits"] = Value::Object(limits);
            }
            c.call(Method::PUT, &format!("/api/vhosts/{}", segment(name)), Some(&body), none).await?;
            Ok(format!("vhost '{name}' ready\n"))
        }
        VhostAction::Delete { name } => {
            c.call(Method::DELETE, &format!("/api/vhosts/{}", segment(name)), None, none).await?;
            Ok(format!("deleted vhost '{name}'\n"))
        }
    }
}

fn tags_row(value: &Value) -> String {
    value.as_array().map(|tags| tags.iter().map(cell).collect::<Vec<_>>().join(",")).unwrap_or_default()
}

pub async fn user(command: &UserCommand) -> Result<String, CliError> {
    let c = client(&command.connection)?;
    let json_out = command.connection.json;
    let none = Duration::ZERO;
    let user_path = |name: &str| format!("/api/users/{}", segment(name));
    let permission_path = |vhost: &str, name: &str| format!("/api/permissions/{}/{}", segment(vhost), segment(name));
    match &command.action {
        UserAction::List => {
            let users = c.call(Method::GET, "/api/users", None, none).await?;
            if json_out {
                return Ok(pretty(&users));
            }
            let rows: Vec<Vec<String>> =
                users.as_array().into_iter().flatten().map(|u| vec![cell(&u["name"]), tags_row(&u["tags"])]).collect();
            Ok(table(&["name", "tags"], &rows))
        }
        UserAction::Whoami => {
            let me = c.call(Method::GET, "/api/whoami", None, none).await?;
            Ok(if json_out { pretty(&me) } else { format!("{} [{}]\n", cell(&me["name"]), tags_row(&me["tags"])) })
        }
        UserAction::Add { name, new_password, tags } => {
            // Only "no such user" lets the add go on; a refused login or a broker away is said.
            match c.call(Method::GET, &user_path(name), None, none).await {
                Ok(_) => {
                    return Err(CliError { code: 1, message: format!("user '{name}' exists (use 'weir user set')") })
                }
                Err(e) if e.code == 3 => {}
                Err(e) => return Err(e),
            }
            let body = json!({ "password": new_password, "tags": tags });
            c.call(Method::PUT, &user_path(name), Some(&body), none).await?;
            Ok(format!("user '{name}' added\n"))
        }
        UserAction::Set { name, new_password, tags } => {
            // Changing a user never creates one by mistake.
            c.call(Method::GET, &user_path(name), None, none).await?;
            let mut body = json!({});
            if let Some(password) = new_password {
                body["password"] = json!(password);
            }
            if let Some(tags) = tags {
                body["tags"] = json!(tags);
            }
            c.call(Method::PUT, &user_path(name), Some(&body), none).await?;
            Ok(format!("user '{name}' changed\n"))
        }
        UserAction::Delete { name } => {
            c.call(Method::DELETE, &user_path(name), None, none).await?;
            Ok(format!("deleted user '{name}'\n"))
        }
        UserAction::Permit { name, configure, write, read, vhost } => {
            let body = json!({ "configure": configure, "write": write, "read": read });
            c.call(Method::PUT, &permission_path(vhost, name), Some(&body), none).await?;
            Ok(format!("user '{name}' permitted on vhost '{vhost}'\n"))
        }
        UserAction::Revoke { name, vhost } => {
            c.call(Method::DELETE, &permission_path(vhost, name), None, none).await?;
            Ok(format!("user '{name}' has no permission on vhost '{vhost}' now\n"))
        }
        UserAction::Permissions => {
            let list = c.call(Method::GET, "/api/permissions", None, none).await?;
            if json_out {
                return Ok(pretty(&list));
            }
            let keys = ["user", "vhost", "configure", "write", "read"];
            let rows: Vec<Vec<String>> =
                list.as_array().into_iter().flatten().map(|p| keys.iter().map(|k| cell(&p[*k])).collect()).collect();
            Ok(table(&keys, &rows))
        }
    }
}
