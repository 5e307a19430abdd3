//! The service layer: every action on the inventory written once.
//!
//! The panel, the JSON API and the CLI only translate: they parse what a person
//! typed into typed input, call one function here with the caller and the time, and
//! render the result or the error. Each function here checks the caller's permission,
//! validates the input, does its work in one transaction and records the audit
//! event, so no surface can skip a rule or word it differently.
//!
//! - `machines`: add (adopting a discovered machine), edit, delete, set mode, set
//!   image, and a machine's own done-URL call; the one field check that import
//!   uses too.
//! - `boot`: a machine's boot configuration now, for iPXE (HTTP) or grub (TFTP),
//!   from one decision, and the TFTP files of the shim and grub path.
//! - `images`: register an added or replaced image, delete one.
//! - `import`: check rows of a CSV/XLSX file against the inventory, apply them.
//! - `power`: power controllers, power verbs, reinstall/rescue/wipe of one machine
//!   or many.
//! - `users`: panel users, logins (rate-limited, a bounded number of password
//!   checks at once), sessions and API tokens.
//! - `diagnosis`: the sweeper that records why boots failed (`boot.diagnosis`), and
//!   the diagnoses of a machine's current boot.
//!
//! Callers are people (a panel session or an API token, with a role), the CLI
//! (acting as admin, recorded with the Unix user), a machine (its done-URL) and
//! rackboot itself (DHCP discovery, the power poller).

pub mod boot;
pub mod catalog;
pub mod diagnosis;
pub mod images;
pub mod import;
pub mod machines;
pub mod power;
pub mod users;

use crate::auth::{Principal, Role};
use crate::config::Subnet;
use crate::lifecycle::{LifecycleConfig, ModeRefused};
use crate::mac::MacAddr;
use crate::store::{Store, StoreError};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::Arc;

/// What the services work with; cheap to clone.
#[derive(Clone)]
pub struct Services {
    pub store: Store,
    pub lifecycle: Arc<LifecycleConfig>,
    /// The DHCP subnets served (none without `[dhcp]` or in proxy mode): a fixed
    /// address must lie inside one of them.
    pub subnets: Arc<Vec<Subnet>>,
    /// Sends power verbs to BMCs, with the `[power]` limits.
    pub power: Arc<crate::power::Power>,
    /// Where images live (`images/NAME/`) and uploads are staged (`uploads/`).
    pub data_dir: PathBuf,
    /// Login attempts per address and per user name.
    pub limiter: Arc<crate::auth::LoginLimiter>,
    /// The bound on argon2 checks at once (memory), shared by every login.
    pub password_checks: Arc<users::PasswordChecks>,
    /// `[images]`: the mirrors and proxy catalog fetches use.
    pub images: Arc<crate::config::ImagesConfig>,
    /// Catalog fetches started from the panel, with their progress.
    pub fetches: Arc<catalog::FetchJobs>,
}

impl Services {
    pub fn new(
        store: Store,
        lifecycle: LifecycleConfig,
        subnets: Vec<Subnet>,
        power: crate::power::PowerConfig,
        data_dir: PathBuf,
    ) -> Self {
        Services {
            data_dir,
            limiter: Arc::default(),
            password_checks: Arc::default(),
            images: Arc::default(),
            fetches: Arc::default(),
            store,
            lifecycle: Arc::new(lifecycle),
            subnets: Arc::new(subnets),
            power: Arc::new(crate::power::Power::new(power)),
        }
    }
}

impl Services {
    /// The services as a configuration asks for them.
    pub fn from_config(store: Store, config: &crate::config::Config) -> Self {
        let services = Services::new(
            store,
            config.lifecycle.clone(),
            config
                .dhcp
                .as_ref()
                .map(|d| d.subnets.clone())
                .unwrap_or_default(),
            config.power.clone(),
            config.data_dir.clone(),
        );
        Services {
            images: Arc::new(config.images.clone()),
            ..services
        }
    }
}

/// Who asks for an action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// A person signed in to the panel.
    User { name: String, role: Role },
    /// An API token.
    Token { name: String, role: Role },
    /// The command line, run by this Unix user; it acts as admin, since whoever can
    /// run it can read the database file anyway.
    Cli { user: String },
    /// A machine, through its done-URL.
    Machine,
    /// rackboot itself (DHCP discovery, the power poller).
    System,
}

/// What an action needs of its caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Change machines, images, power (operators and admins).
    Change,
    /// Manage users and tokens (admins).
    Admin,
}

impl Caller {
    /// The caller of a panel or API request.
    pub fn from_principal(principal: &Principal) -> Self {
        if principal.via_token {
            Caller::Token {
                name: principal.name.clone(),
                role: principal.role,
            }
        } else {
            Caller::User {
                name: principal.name.clone(),
                role: principal.role,
            }
        }
    }

    pub fn cli(user: impl Into<String>) -> Self {
        Caller::Cli { user: user.into() }
    }

    /// How the caller appears in the audit log; rackboot's own events name nobody.
    pub fn actor(&self) -> Option<String> {
        match self {
            Caller::User { name, .. } => Some(format!("user:{name}")),
            Caller::Token { name, .. } => Some(format!("token:{name}")),
            Caller::Cli { user } => Some(format!("cli:{user}")),
            Caller::Machine => Some("machine".into()),
            Caller::System => None,
        }
    }

    /// The audit actor as text, `-` for rackboot itself.
    pub fn actor_text(&self) -> String {
        self.actor().unwrap_or_else(|| "-".into())
    }

    fn role(&self) -> Option<Role> {
        match self {
            Caller::User { role, .. } | Caller::Token { role, .. } => Some(*role),
            Caller::Cli { .. } | Caller::System => Some(Role::Admin),
            Caller::Machine => None,
        }
    }

    /// Refuses the action unless the caller's role allows it.
    pub fn require(&self, need: Need) -> Result<(), ServiceError> {
        let allowed = match (self.role(), need) {
            (Some(role), Need::Change) => role.can_change(),
            (Some(role), Need::Admin) => role.can_admin(),
            (None, _) => false,
        };
        if allowed {
            return Ok(());
        }
        Err(ServiceError::Forbidden(match (self, need) {
            (Caller::Token { .. }, Need::Change) => "this token may only read".into(),
            (_, Need::Change) => {
                "viewers may only look; an operator or admin may change this".into()
            }
            (_, Need::Admin) => "only an admin may manage users and tokens".into(),
        }))
    }
}

/// Why an action was refused or failed. Each surface maps these to its own form
/// once (HTTP status and page or JSON, CLI message and exit code); the messages are
/// meant for the person who asked.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("{0}")]
    Forbidden(String),
    /// A field the caller gave is not acceptable; `why` names it and what was typed.
    #[error("{why}")]
    Invalid { field: &'static str, why: String },
    #[error("machine {0} already exists")]
    MachineExists(MacAddr),
    #[error("no machine {0}")]
    NoSuchMachine(MacAddr),
    #[error("no image named {0:?}")]
    NoSuchImage(String),
    #[error("{ip} is already the fixed address of {owner}")]
    AddressTaken { ip: Ipv4Addr, owner: MacAddr },
    #[error("image {name} is assigned to {machines} machine(s) and cannot be deleted")]
    ImageInUse { name: String, machines: u64 },
    #[error(transparent)]
    ModeRefused(#[from] ModeRefused),
    /// Another state conflict, said in words (an admin exists already, a token
    /// name is taken, the image is the rescue image).
    #[error("{0}")]
    Conflict(String),
    /// Something named that does not exist (a user, a token, a controller).
    #[error("{0}")]
    NotFound(String),
    /// A BMC or another system rackboot depends on failed.
    #[error("{0}")]
    Upstream(String),
    /// Files under `data_dir` could not be read or written.
    #[error("{0}")]
    Files(String),
    #[error(transparent)]
    Store(StoreError),
}

impl From<StoreError> for ServiceError {
    fn from(e: StoreError) -> Self {
        // Older store functions still word their refusals; they keep their kind.
        match e {
            StoreError::Conflict(why) => ServiceError::Conflict(why),
            StoreError::NotFound(why) => ServiceError::NotFound(why),
            other => ServiceError::Store(other),
        }
    }
}

impl ServiceError {
    pub fn invalid(field: &'static str, why: impl Into<String>) -> Self {
        ServiceError::Invalid {
            field,
            why: why.into(),
        }
    }

    /// The field at fault, for forms that mark it.
    pub fn field(&self) -> Option<&'static str> {
        match self {
            ServiceError::Invalid { field, .. } => Some(field),
            ServiceError::AddressTaken { .. } => Some("ip"),
            _ => None,
        }
    }

    /// What kind of refusal this is: the surfaces map each kind to a status once.
    pub fn kind(&self) -> ErrorKind {
        match self {
            ServiceError::Forbidden(_) => ErrorKind::Forbidden,
            ServiceError::Invalid { .. } => ErrorKind::Invalid,
            ServiceError::NoSuchMachine(_)
            | ServiceError::NoSuchImage(_)
            | ServiceError::NotFound(_) => ErrorKind::NotFound,
            ServiceError::MachineExists(_)
            | ServiceError::AddressTaken { .. }
            | ServiceError::ImageInUse { .. }
            | ServiceError::ModeRefused(_)
            | ServiceError::Conflict(_) => ErrorKind::Conflict,
            ServiceError::Upstream(_) => ErrorKind::Upstream,
            ServiceError::Store(_) | ServiceError::Files(_) => ErrorKind::Internal,
        }
    }
}

/// The kinds of `ServiceError`, for the status tables of the surfaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    Forbidden,
    Invalid,
    NotFound,
    Conflict,
    Upstream,
    Internal,
}
