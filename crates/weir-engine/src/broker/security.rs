//! Permission checks on every client operation, and the administrator's commands that
//! change vhosts, users and permissions (docs/SECURITY.md).
//!
//! Each change is validated, logged (one record), applied to the broker's [`Directory`], and
//! then published to the [`SharedDirectory`] the front-ends log users in with. The answer,
//! [`Event::AdminDone`], is gated on the record's fsync like every durable reply.
//!
//! Connections follow the changes at once: a connection keeps its user's permission on its
//! vhost, refreshed when that permission changes; deleting a user or a vhost closes their
//! connections (AMQP 320, as an operator's close).

use std::sync::Arc;

use weir_log::Storage;

use crate::api::{AdminOp, ConnectionId, Event, Origin};
use crate::error::{EngineError, ErrorKind};
use crate::records::{self, VhostRecord};
use crate::security::{
    hash_password, Access, Permission, PermissionRecord, UserRecord, ADMINISTRATOR_TAG, DEFAULT_USER, NAME_LEN_MAX,
};

use super::{error, Broker, DEFAULT_VHOST};

/// Tags per user, and bytes per tag.
const TAGS_MAX: usize = 32;

fn check_name(what: &str, name: &str) -> Result<(), EngineError> {
    crate::security::check_name(what, name).map_err(|text| error(ErrorKind::PreconditionFailed, text))
}

fn check_user(user: &UserRecord) -> Result<(), EngineError> {
    check_name("user", &user.name)?;
    if user.tags.len() > TAGS_MAX || user.tags.iter().any(|tag| check_name("tag", tag).is_err()) {
        return Err(error(
            ErrorKind::PreconditionFailed,
            format!("a user has at most {TAGS_MAX} tags of 1 to {NAME_LEN_MAX} bytes"),
        ));
    }
    if !user.password_hash.is_empty() {
        crate::security::check_password_hash(&user.password_hash)
            .map_err(|text| error(ErrorKind::PreconditionFailed, text))?;
    }
    Ok(())
}

impl<S: Storage> Broker<S> {
    /// May the connection's user have `access` to the `kind` (`queue`, `exchange`) called
    /// `name`? The default exchange is checked as `amq.default`, as RabbitMQ does.
    pub(super) fn authorize(
        &self,
        connection: ConnectionId,
        access: Access,
        kind: &str,
        name: &str,
    ) -> Result<(), EngineError> {
        let state = self
            .connections
            .get(&connection)
            .ok_or_else(|| error(ErrorKind::InternalError, "connection is not open".into()))?;
        let name = if kind == "exchange" && name.is_empty() { "amq.default" } else { name };
        if state.permission.as_ref().is_some_and(|p| p.allows(access, name)) {
            return Ok(());
        }
        Err(error(
            ErrorKind::AccessRefused,
            format!("access to {kind} '{name}' in vhost '{}' refused for user '{}'", state.vhost, state.info.user),
        ))
    }

    pub(super) fn admin(&mut self, origin: Origin, op: AdminOp) -> Result<(), EngineError> {
        let user = &self
            .connections
            .get(&origin.connection)
            .ok_or_else(|| error(ErrorKind::InternalError, "connection is not open".into()))?
            .info
            .user;
        if !self.directory.is_administrator(user) {
            return Err(error(
                ErrorKind::AccessRefused,
                format!("user '{user}' is not an administrator (tag '{ADMINISTRATOR_TAG}')"),
            ));
        }
        self.refuse_if_read_only()?;
        match op {
            AdminOp::PutVhost(vhost) => self.put_vhost(vhost)?,
            AdminOp::DeleteVhost { name } => self.delete_vhost(&name)?,
            AdminOp::PutUser(user) => self.put_user(user)?,
            AdminOp::DeleteUser { name } => self.delete_user(&name)?,
            AdminOp::PutPermission(permission) => self.put_permission(permission)?,
            AdminOp::DeletePermission { user, vhost } => self.delete_permission(&user, &vhost)?,
        }
        self.publish_directory();
        self.reply(origin.connection, Event::AdminDone { channel: origin.channel });
        Ok(())
    }

    fn put_vhost(&mut self, record: VhostRecord) -> Result<(), EngineError> {
        check_name("vhost", &record.name)?;
        crate::topology::check_vhost_limits(&record.limits)
            .map_err(|text| error(ErrorKind::PreconditionFailed, text))?;
        self.append_with(records::KIND_VHOST_PUT, |w| records::encode_vhost(w, &record))?;
        self.vhosts.entry(record.name).or_default().limits = record.limits;
        Ok(())
    }

    fn delete_vhost(&mut self, name: &str) -> Result<(), EngineError> {
        if name == DEFAULT_VHOST {
            return Err(error(ErrorKind::PreconditionFailed, format!("the default vhost '{name}' cannot be deleted")));
        }
        let Some(vhost) = self.vhosts.get(name) else {
            return Err(error(ErrorKind::NotFound, format!("no vhost '{name}'")));
        };
        let queues: Vec<_> = vhost.queues.values().copied().collect();
        self.force_close(|state| state.vhost == name, &format!("vhost '{name}' is deleted"));
        for id in queues {
            self.delete_queue(id);
        }
        self.log_append(records::KIND_VHOST_DELETE, &records::encode_names(&[name]))?;
        self.vhosts.remove(name);
        self.directory.delete_vhost(name);
        Ok(())
    }

    fn put_user(&mut self, user: UserRecord) -> Result<(), EngineError> {
        check_user(&user)?;
        if !self.directory.keeps_an_administrator(&user.name, Some(&user)) {
            return Err(last_administrator(&user.name));
        }
        self.append_with(records::KIND_USER_PUT, |w| records::encode_user(w, &user))?;
        self.directory.put_user(user);
        Ok(())
    }

    fn delete_user(&mut self, name: &str) -> Result<(), EngineError> {
        if self.directory.user(name).is_none() {
            return Err(error(ErrorKind::NotFound, format!("no user '{name}'")));
        }
        if !self.directory.keeps_an_administrator(name, None) {
            return Err(last_administrator(name));
        }
        self.log_append(records::KIND_USER_DELETE, &records::encode_names(&[name]))?;
        self.directory.delete_user(name);
        self.force_close(|state| state.info.user == name, &format!("user '{name}' is deleted"));
        Ok(())
    }

    fn put_permission(&mut self, record: PermissionRecord) -> Result<(), EngineError> {
        if self.directory.user(&record.user).is_none() {
            return Err(error(ErrorKind::NotFound, format!("no user '{}'", record.user)));
        }
        if !self.vhosts.contains_key(&record.vhost) {
            return Err(error(ErrorKind::NotFound, format!("no vhost '{}'", record.vhost)));
        }
        let permission = Permission::compile(record).map_err(|text| error(ErrorKind::PreconditionFailed, text))?;
        self.append_with(records::KIND_PERMISSION_PUT, |w| records::encode_permission(w, &permission.record))?;
        let (user, vhost) = (permission.record.user.clone(), permission.record.vhost.clone());
        self.directory.put_permission(permission);
        self.refresh_permissions(&user, &vhost);
        Ok(())
    }

    fn delete_permission(&mut self, user: &str, vhost: &str) -> Result<(), EngineError> {
        if self.directory.permission(user, vhost).is_none() {
            return Err(error(ErrorKind::NotFound, format!("user '{user}' has no permission on vhost '{vhost}'")));
        }
        self.log_append(records::KIND_PERMISSION_DELETE, &records::encode_names(&[user, vhost]))?;
        self.directory.delete_permission(user, vhost);
        self.refresh_permissions(user, vhost);
        Ok(())
    }

    /// Give the user's connections on the vhost their permission as it now is.
    fn refresh_permissions(&mut self, user: &str, vhost: &str) {
        let permission = self.directory.permission(user, vhost).cloned();
        for state in self.connections.values_mut() {
            if state.info.user == user && state.vhost == vhost && !state.forced_closed {
                state.permission = permission.clone();
            }
        }
    }

    /// Tell the client connections that match to close (AMQP 320); from now on they may do
    /// nothing. The HTTP API's own connections end with their request.
    fn force_close(&mut self, matches: impl Fn(&super::ConnectionState) -> bool, reason: &str) {
        for (id, state) in &mut self.connections {
            if matches(state) {
                state.permission = None;
                state.forced_closed = true;
                if !state.info.internal {
                    let error = error(ErrorKind::ConnectionForced, reason.to_string());
                    self.outbox.push(*id, Event::ConnectionError { error });
                }
            }
        }
    }

    pub(crate) fn publish_directory(&self) {
        self.shared_directory.store(Arc::new(self.directory.clone()));
    }

    /// A store without users (new, or from before users existed) gets `guest`/`guest`, an
    /// administrator with every permission on the default vhost, as RabbitMQ ships. An
    /// administrator can never be removed, so this happens only once per store.
    pub(crate) fn seed_directory(&mut self) {
        if self.directory.is_empty() {
            let user = UserRecord {
                name: DEFAULT_USER.into(),
                password_hash: hash_password(DEFAULT_USER),
                tags: vec![ADMINISTRATOR_TAG.into()],
            };
            let record = PermissionRecord {
                user: DEFAULT_USER.into(),
                vhost: DEFAULT_VHOST.into(),
                configure: ".*".into(),
                write: ".*".into(),
                read: ".*".into(),
            };
            let logged = self.append_with(records::KIND_USER_PUT, |w| records::encode_user(w, &user)).and_then(|()| {
                self.append_with(records::KIND_PERMISSION_PUT, |w| records::encode_permission(w, &record))
            });
            if let Err(e) = logged {
                tracing::warn!("the default user could not be logged; it exists until the broker stops: {e}");
            }
            self.directory.put_user(user);
            self.directory.put_permission(Permission::compile(record).expect("'.*' compiles"));
        }
        self.publish_directory();
    }
}

fn last_administrator(name: &str) -> EngineError {
    error(
        ErrorKind::PreconditionFailed,
        format!("user '{name}' is the last administrator; give another user the '{ADMINISTRATOR_TAG}' tag first"),
    )
}
