//! The catalog's actions: the definitions in force (which are registered, and whether
//! each chain was tested end to end), and fetching one: its whole chain verified
//! first, then the image registered with its provenance in one transaction.
//! Fetches the panel starts run in the background as jobs whose progress it shows.

use super::images::{Existing, check_cmdline};
use super::{Caller, Need, ServiceError, Services};
use crate::catalog::definition::{Catalog, Definition};
use crate::catalog::fetch::{FetchError, Fetcher, Progress, ProgressSink, Request, Source};
use crate::images::StagedImage;
use crate::store::{self, Image, ImageSource};
use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// What to fetch, and from where.
#[derive(Debug, Clone, Default)]
pub struct FetchImage {
    pub definition: String,
    /// A mirror's base URL for this one fetch (before `[images]` and the definition's).
    pub mirror: Option<String>,
    /// A directory laid out as the mirror is: no network at all.
    pub from_dir: Option<PathBuf>,
    /// Trusted keys that replace the definition's (a site mirror that re-signs).
    pub keyring: Option<Vec<u8>>,
    pub parameters: BTreeMap<String, String>,
}

/// A definition and, when it is registered, where the image came from.
#[derive(Debug, Clone)]
pub struct CatalogEntry {
    pub definition: Definition,
    pub registered: Option<ImageSource>,
}

impl From<FetchError> for ServiceError {
    fn from(e: FetchError) -> Self {
        match e {
            FetchError::Request(why) => ServiceError::Invalid {
                field: "definition",
                why,
            },
            e @ (FetchError::Download { .. } | FetchError::Verify { .. }) => {
                ServiceError::Upstream(e.to_string())
            }
            e @ (FetchError::NoSpace { .. } | FetchError::Io { .. }) => {
                ServiceError::Files(e.to_string())
            }
        }
    }
}

impl Services {
    /// The definitions in force: the shipped ones with `data_dir/images/*.toml` on top.
    pub async fn catalog(&self) -> Result<Catalog, ServiceError> {
        let dir = self.data_dir.join("images");
        tokio::task::spawn_blocking(move || Catalog::load(&dir))
            .await
            .map_err(|e| ServiceError::Files(format!("catalog task: {e}")))?
            .map_err(|e| ServiceError::Files(e.to_string()))
    }

    pub async fn catalog_entries(&self) -> Result<Vec<CatalogEntry>, ServiceError> {
        let catalog = self.catalog().await?;
        let sources = self
            .store
            .call(|conn| store::list_image_sources(conn))
            .await?;
        Ok(catalog
            .definitions()
            .map(|definition| CatalogEntry {
                definition: definition.clone(),
                registered: sources.iter().find(|s| s.name == definition.name).cloned(),
            })
            .collect())
    }

    /// Who may ask for what: any operator fetches a definition as it stands; only an
    /// admin replaces its trusted keys or reads files from the server's disk.
    fn check_fetch(caller: &Caller, request: &FetchImage) -> Result<(), ServiceError> {
        caller.require(Need::Change)?;
        if request.keyring.is_some() && caller.require(Need::Admin).is_err() {
            return Err(ServiceError::Forbidden(
                "only an admin may replace a definition's trusted keys".into(),
            ));
        }
        if request.from_dir.is_some() && caller.require(Need::Admin).is_err() {
            return Err(ServiceError::Forbidden(
                "only an admin may fetch from a directory on the server".into(),
            ));
        }
        if let Some(mirror) = &request.mirror
            && !mirror.starts_with("http://")
            && !mirror.starts_with("https://")
        {
            return Err(ServiceError::invalid(
                "mirror",
                format!("{mirror:?} must be an http:// or https:// URL"),
            ));
        }
        Ok(())
    }

    /// Fetches a definition's files, verifies its whole chain, and registers the image
    /// under the definition's name with where it came from. Nothing is registered
    /// unless every link held.
    pub async fn fetch_image(
        &self,
        caller: &Caller,
        request: FetchImage,
        progress: ProgressSink,
    ) -> Result<(Image, ImageSource), ServiceError> {
        Self::check_fetch(caller, &request)?;
        let catalog = self.catalog().await?;
        let definition = catalog.get(&request.definition).cloned().ok_or_else(|| {
            ServiceError::NotFound(format!(
                "no image definition {:?} (the catalog has {})",
                request.definition,
                catalog.names().join(", ")
            ))
        })?;
        check_cmdline(&definition.cmdline)?;
        crate::script::check_syntax("cmdline", &definition.cmdline).map_err(|e| {
            ServiceError::invalid(
                "cmdline",
                format!("image {}: the command line template: {e}", definition.name),
            )
        })?;
        let name = definition.name.clone();
        let existing = self
            .store
            .call({
                let name = name.clone();
                move |conn| {
                    Ok((
                        store::get_image(conn, &name)?.is_some(),
                        store::get_image_source(conn, &name)?.is_some(),
                    ))
                }
            })
            .await?;
        if existing == (true, false) {
            return Err(ServiceError::Conflict(format!(
                "an image named {name} exists that was not fetched from the catalog; \
                 delete it first"
            )));
        }
        let source = match (&request.from_dir, &request.mirror) {
            (Some(dir), _) => Source::Dir(dir.clone()),
            (None, Some(mirror)) => Source::Http(mirror.clone()),
            (None, None) => Source::Http(
                self.images
                    .mirror_for(&definition.mirror_family)
                    .unwrap_or_else(|| definition.mirror.clone()),
            ),
        };
        let fetcher = Fetcher::new(&self.data_dir, self.images.proxy.as_deref(), progress)?;
        let fetched = fetcher
            .fetch(
                &catalog,
                Request {
                    definition: definition.clone(),
                    source,
                    keyring: request.keyring.clone(),
                    parameters: request.parameters.clone(),
                },
            )
            .await?;
        let staging = fetched.staging.clone();
        let now_ms = crate::clock::now_ms();
        let image_source = ImageSource {
            name: name.clone(),
            definition: definition.name.clone(),
            verified_by: fetched.fingerprint.clone(),
            provenance: fetched.provenance.clone(),
            vars: fetched.vars.clone(),
            fetched_ms: now_ms,
        };
        let staged = StagedImage {
            name: name.clone(),
            cmdline: definition.cmdline.clone(),
            staging: fetched.staging,
            kernel_sha256: fetched.kernel_sha256,
            initrd_sha256: fetched.initrd_sha256.unwrap_or_default(),
            files: fetched.templates,
            arches: crate::lifecycle::parse_arches(&definition.architectures.join(",")).map_err(
                |e| ServiceError::Invalid {
                    field: "architectures",
                    why: format!("definition {}: {e}", definition.name),
                },
            )?,
        };
        let registered = self
            .register_image(
                caller,
                now_ms,
                staged,
                Existing::Replace,
                Some((image_source.clone(), fetched.stamp)),
            )
            .await;
        if registered.is_err() {
            let _ = tokio::fs::remove_dir_all(&staging).await;
        }
        Ok((registered?, image_source))
    }

    /// Starts a fetch in the background (the panel's "Add from catalog"); its
    /// progress and outcome are read with `fetch_job`.
    pub fn start_fetch(&self, caller: &Caller, request: FetchImage) -> Result<u64, ServiceError> {
        Self::check_fetch(caller, &request)?;
        let job = self
            .fetches
            .begin(&request.definition, caller.actor_text())?;
        let state = Arc::clone(&job.1);
        let sink: ProgressSink = Arc::new(move |progress: Progress| {
            if let Ok(mut state) = state.lock() {
                state.progress = progress;
            }
        });
        let (services, caller, state) = (self.clone(), caller.clone(), Arc::clone(&job.1));
        tokio::spawn(async move {
            let outcome = services.fetch_image(&caller, request, sink).await;
            if let Ok(mut state) = state.lock() {
                state.outcome = Some(match outcome {
                    Ok((image, source)) => Ok(format!(
                        "registered {} (kernel sha256 {}), verified by {}",
                        image.name,
                        image.kernel_sha256,
                        source.verified_by.as_deref().unwrap_or("its pinned sha256")
                    )),
                    Err(e) => Err(e.to_string()),
                });
            }
        });
        Ok(job.0)
    }

    pub fn fetch_job(&self, id: u64) -> Option<FetchJob> {
        self.fetches.get(id)
    }
}

/// A background fetch as the panel shows it.
#[derive(Debug, Clone, Default)]
pub struct FetchJob {
    pub definition: String,
    pub actor: String,
    pub progress: Progress,
    /// `None` while it runs; then what was registered, or why not.
    pub outcome: Option<Result<String, String>>,
}

/// The fetches started from the panel: the newest few, one at a time per definition.
#[derive(Default)]
pub struct FetchJobs {
    jobs: Mutex<VecDeque<(u64, Arc<Mutex<FetchJob>>)>>,
    next: std::sync::atomic::AtomicU64,
}

/// Finished jobs kept for their pages; running ones are never dropped.
const KEPT_JOBS: usize = 16;

impl FetchJobs {
    fn begin(
        &self,
        definition: &str,
        actor: String,
    ) -> Result<(u64, Arc<Mutex<FetchJob>>), ServiceError> {
        let mut jobs = self
            .jobs
            .lock()
            .map_err(|_| ServiceError::Files("the fetch jobs' lock is poisoned".into()))?;
        let running =
            |job: &Arc<Mutex<FetchJob>>| job.lock().map(|j| j.outcome.is_none()).unwrap_or(false);
        if jobs.iter().any(|(_, job)| {
            running(job)
                && job
                    .lock()
                    .map(|j| j.definition == definition)
                    .unwrap_or(false)
        }) {
            return Err(ServiceError::Conflict(format!(
                "{definition} is being fetched already"
            )));
        }
        if jobs.iter().filter(|(_, job)| running(job)).count() >= KEPT_JOBS {
            return Err(ServiceError::Conflict(
                "too many fetches are running; wait for one to end".into(),
            ));
        }
        while jobs.len() >= KEPT_JOBS {
            match jobs.iter().position(|(_, job)| !running(job)) {
                Some(finished) => {
                    jobs.remove(finished);
                }
                None => break,
            }
        }
        let id = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        let job = Arc::new(Mutex::new(FetchJob {
            definition: definition.to_string(),
            actor,
            ..FetchJob::default()
        }));
        jobs.push_back((id, Arc::clone(&job)));
        Ok((id, job))
    }

    fn get(&self, id: u64) -> Option<FetchJob> {
        let jobs = self.jobs.lock().ok()?;
        let (_, job) = jobs.iter().find(|(job_id, _)| *job_id == id)?;
        job.lock().ok().map(|j| j.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Role;
    use crate::store::{ReleaseStamp, Store};

    fn services(data_dir: &std::path::Path) -> Services {
        Services::new(
            Store::open_in_memory().expect("store"),
            crate::lifecycle::LifecycleConfig::default(),
            Vec::new(),
            crate::power::PowerConfig::default(),
            data_dir.to_path_buf(),
        )
    }

    fn user(role: Role) -> Caller {
        Caller::User {
            name: "ann".into(),
            role,
        }
    }

    fn no_progress() -> ProgressSink {
        Arc::new(|_| {})
    }

    #[tokio::test]
    async fn only_an_admin_replaces_keys_or_reads_the_servers_disk() {
        let dir = tempfile::tempdir().expect("tmp");
        let services = services(dir.path());
        let ask = |keyring: bool, from_dir: bool| FetchImage {
            definition: "memtest86plus".into(),
            keyring: keyring.then(|| b"key".to_vec()),
            from_dir: from_dir.then(|| dir.path().to_path_buf()),
            ..FetchImage::default()
        };
        for (caller, request) in [
            (user(Role::Operator), ask(true, false)),
            (user(Role::Operator), ask(false, true)),
            (user(Role::Viewer), ask(false, false)),
        ] {
            let err = services
                .fetch_image(&caller, request, no_progress())
                .await
                .expect_err("refused");
            assert!(matches!(err, ServiceError::Forbidden(_)), "{err}");
        }
        // An admin gets past the permission check to the key itself.
        let err = services
            .fetch_image(&user(Role::Admin), ask(true, false), no_progress())
            .await
            .expect_err("not a key");
        assert!(err.to_string().contains("--keyring"), "{err}");
        let bad_mirror = FetchImage {
            mirror: Some("ftp://mirror.example/debian".into()),
            ..ask(false, false)
        };
        let err = services
            .fetch_image(&user(Role::Operator), bad_mirror, no_progress())
            .await
            .expect_err("mirror");
        assert!(
            matches!(
                err,
                ServiceError::Invalid {
                    field: "mirror",
                    ..
                }
            ),
            "{err}"
        );
    }

    #[tokio::test]
    async fn a_fetch_never_replaces_an_uploaded_image_of_the_same_name() {
        let dir = tempfile::tempdir().expect("tmp");
        let services = services(dir.path());
        let staging = crate::images::new_staging_dir(dir.path()).expect("staging");
        std::fs::write(staging.join("kernel"), b"k").expect("w");
        let staged = StagedImage {
            arches: vec![crate::lifecycle::Arch::Amd64],
            name: "memtest86plus".into(),
            cmdline: String::new(),
            staging,
            kernel_sha256: "00".repeat(32),
            initrd_sha256: String::new(),
            files: Vec::new(),
        };
        services
            .add_image(&Caller::cli("root"), 0, staged, Existing::Refuse)
            .await
            .expect("upload");
        let err = services
            .fetch_image(
                &Caller::cli("root"),
                FetchImage {
                    definition: "memtest86plus".into(),
                    ..FetchImage::default()
                },
                no_progress(),
            )
            .await
            .expect_err("conflict");
        assert!(matches!(err, ServiceError::Conflict(_)), "{err}");
    }

    fn staged(dir: &std::path::Path) -> StagedImage {
        let staging = crate::images::new_staging_dir(dir).expect("staging");
        std::fs::write(staging.join("kernel"), b"k").expect("w");
        StagedImage {
            arches: vec![crate::lifecycle::Arch::Amd64],
            name: "debian-12".into(),
            cmdline: String::new(),
            staging,
            kernel_sha256: "11".repeat(32),
            initrd_sha256: String::new(),
            files: Vec::new(),
        }
    }

    fn source(provenance: &str) -> ImageSource {
        ImageSource {
            name: "debian-12".into(),
            definition: "debian-12".into(),
            verified_by: Some("ABCD".into()),
            provenance: provenance.into(),
            ..ImageSource::default()
        }
    }

    #[tokio::test]
    async fn an_older_signed_suite_than_one_seen_is_refused_and_registers_nothing() {
        let dir = tempfile::tempdir().expect("tmp");
        let services = services(dir.path());
        let stamp = |date| ReleaseStamp {
            key: "ABCD:dists/bookworm/InRelease".into(),
            date,
        };
        let cli = Caller::cli("root");
        services
            .register_image(
                &cli,
                1,
                staged(dir.path()),
                Existing::Replace,
                Some((source("first"), Some(stamp(200)))),
            )
            .await
            .expect("first");
        let older = staged(dir.path());
        let older_staging = older.staging.clone();
        let err = services
            .register_image(
                &cli,
                2,
                older,
                Existing::Replace,
                Some((source("replayed"), Some(stamp(100)))),
            )
            .await
            .expect_err("replay");
        assert!(err.to_string().contains("older"), "{err}");
        assert!(
            older_staging.exists(),
            "the staged files are left for the caller"
        );
        let kept = services
            .store
            .call(|conn| store::get_image_source(conn, "debian-12"))
            .await
            .expect("q")
            .expect("source");
        assert_eq!(
            kept.provenance, "first",
            "the registered image is unchanged"
        );
        // The same date again (the same file) or a newer one is fine.
        services
            .register_image(
                &cli,
                3,
                staged(dir.path()),
                Existing::Replace,
                Some((source("again"), Some(stamp(200)))),
            )
            .await
            .expect("same date");
        // Files replaced by hand lose their provenance.
        services
            .add_image(&cli, 4, staged(dir.path()), Existing::Replace)
            .await
            .expect("upload over it");
        let gone = services
            .store
            .call(|conn| store::get_image_source(conn, "debian-12"))
            .await
            .expect("q");
        assert!(gone.is_none());
    }

    #[tokio::test]
    async fn a_panel_fetch_runs_as_a_job_with_its_outcome() {
        let dir = tempfile::tempdir().expect("tmp");
        let services = services(dir.path());
        let id = services
            .start_fetch(
                &user(Role::Operator),
                FetchImage {
                    definition: "no-such-os".into(),
                    ..FetchImage::default()
                },
            )
            .expect("started");
        let mut outcome = None;
        for _ in 0..100 {
            outcome = services.fetch_job(id).and_then(|job| job.outcome);
            if outcome.is_some() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        let why = outcome.expect("ended").expect_err("no such definition");
        assert!(
            why.contains("no-such-os") && why.contains("debian-12"),
            "{why}"
        );
        assert!(services.fetch_job(id + 1).is_none());
    }
}
