//! What a machine's network boot gets now, rendered for it, written once for every
//! loader: the iPXE script (over HTTP), the grub configuration (over TFTP, for shim
//! and grub where Secure Boot is on or no iPXE exists), and the files each names. One
//! decision (`lifecycle::plan`, then the image's architectures against the machine's)
//! makes both, so the two loaders boot the same image with the same command line,
//! and a done-URL goes only where `secrets::Rule` allows, over TFTP as over HTTP.
//!
//! Debian's signed network grub reads one fixed file, `$prefix/grub.cfg`, with no
//! per-MAC names. rackboot answers that file (any `.../grub/grub.cfg`, so grubs
//! with other prefixes, like the arm64 installer's `debian-installer/arm64/grub`,
//! work too) with the same few lines for everyone, which `source` the machine's own
//! `boot/MAC.grub` by the MAC grub's network stack booted from (`net_default_mac`).
//! Chosen over answering `grub.cfg` per requesting address: the MAC in the name
//! holds in proxy mode and before a lease is committed, the per-machine file can be
//! fetched by hand to see what a machine gets, and the secrets rule is the same
//! check the iPXE script already makes (the MAC named, against the address asking).

use crate::clock;
use crate::config::BootLoaders;
use crate::inventory::{self, MachineDetail};
use crate::lifecycle::{self, Arch, BootPlan};
use crate::mac::MacAddr;
use crate::script::Scripts;
use crate::secrets::Rule;
use crate::service::Services;
use crate::store::{self, Image, ImageSource, StoreError};
use minijinja::{Value, context};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The boot configuration of one loader.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavour {
    Ipxe,
    Grub,
}

impl Flavour {
    fn template(self, kind: &str) -> &'static str {
        match (self, kind) {
            (Flavour::Ipxe, "boot") => "boot.ipxe",
            (Flavour::Ipxe, "local") => "local.ipxe",
            (Flavour::Ipxe, _) => "unknown.ipxe",
            (Flavour::Grub, "boot") => "boot.grub",
            (Flavour::Grub, "local") => "local.grub",
            (Flavour::Grub, _) => "unknown.grub",
        }
    }
}

/// The fixed `grub/grub.cfg` every machine's grub reads first.
pub const GRUB_ENTRY: &str = "\
# rackboot: grub reads this one file; each machine's own configuration is
# boot/MAC.grub, by the MAC address grub booted from.
set timeout=0
source /boot/${net_default_mac}.grub
echo \"rackboot: no configuration for ${net_default_mac}\"
sleep 10
exit 1
";

#[derive(Debug, thiserror::Error)]
pub enum BootError {
    #[error("inventory unavailable: {0}")]
    Unavailable(#[from] StoreError),
    #[error("not this machine's address: {0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("template not rendered: {0}")]
    Render(String),
}

/// The machine and the image its mode boots, resolved together.
pub struct Resolved {
    pub machine: MachineDetail,
    pub plan: BootPlan,
    pub image: Option<Image>,
    /// Where a catalog image came from, with the values its templates use.
    pub source: Option<ImageSource>,
}

/// A rendered boot configuration, and what its event says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Document {
    pub text: String,
    pub template: &'static str,
    pub summary: String,
}

/// What a TFTP request is answered with, when it names one of rackboot's own files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TftpFile {
    /// Rendered now, for this request.
    Text(String),
    /// A file on disk (shim, grub, an image's kernel or initrd).
    Path(PathBuf),
}

/// The parts boot configurations are made from; cheap to clone.
#[derive(Clone)]
pub struct BootDocs {
    pub services: Services,
    pub scripts: Arc<Scripts>,
    /// Base URL machines reach rackboot at, without a trailing slash.
    pub base_url: String,
    pub secrets: Rule,
    pub loaders: Arc<BootLoaders>,
    /// Unified kernel images built per machine; `None` when its directory could not
    /// be made (the `uki` loader then answers not found).
    pub uki: Option<Arc<crate::uki::UkiCache>>,
}

/// Quotes one word for grub's parser (single quotes, as in sh): a command line's
/// `$`, `;` or quotes reach the kernel as written.
pub fn grub_quote(word: &str) -> String {
    format!("'{}'", word.replace('\'', "'\\''"))
}

fn grub_words(line: &str) -> String {
    line.split_whitespace()
        .map(grub_quote)
        .collect::<Vec<_>>()
        .join(" ")
}

impl BootDocs {
    /// The machine, its plan now, and the image the plan boots. An image built for
    /// other architectures than the machine's is refused here, for every loader:
    /// a machine is never handed a kernel it cannot run.
    pub async fn resolve(&self, mac: MacAddr) -> Result<Option<Resolved>, BootError> {
        let config = Arc::clone(&self.services.lifecycle);
        let now_ms = clock::now_ms();
        let resolved = self
            .services
            .store
            .call(move |conn| {
                let Some(machine) = inventory::machine(conn, mac)? else {
                    return Ok(None);
                };
                let mut plan = lifecycle::plan(&machine.life(), &config, now_ms);
                let mut image = match &plan {
                    BootPlan::Image { image, .. } => store::get_image(conn, image)?,
                    _ => None,
                };
                let arch = Arch::of_recorded_firmware(machine.arch.as_deref());
                if let Some(found) = &image
                    && !found.arches.contains(&arch)
                {
                    plan = BootPlan::Refused(wrong_arch(found, arch));
                    image = None;
                }
                let source = match &image {
                    Some(image) => store::get_image_source(conn, &image.name)?,
                    None => None,
                };
                Ok::<_, StoreError>(Some(Resolved {
                    machine,
                    plan,
                    image,
                    source,
                }))
            })
            .await?;
        Ok(resolved)
    }

    /// Refuses a secret to any address the secrets rule does not allow for `mac`.
    pub async fn check_owner(&self, mac: MacAddr, ip: Option<Ipv4Addr>) -> Result<(), BootError> {
        let Some(ip) = ip else {
            return Err(BootError::Forbidden("not an IPv4 client".into()));
        };
        let verdict = self
            .secrets
            .check(&self.services.store, mac, ip, clock::now_ms() / 1000)
            .await?;
        verdict.map(|_| ()).map_err(|why| {
            tracing::warn!(%mac, %ip, "refused a secret-bearing file: the address is {why}");
            BootError::Forbidden(why.to_string())
        })
    }

    /// What a machine's command line and install templates are rendered with: the
    /// machine, its secrets' URLs (when it may have them), the mirror and the values
    /// its catalog image fixed (`iso_url`, `release`), and the site's console.
    pub fn install_context(
        &self,
        mac: MacAddr,
        machine: &MachineDetail,
        image: &Image,
        source: Option<&ImageSource>,
        with_secrets: bool,
    ) -> Value {
        let token = machine
            .token
            .as_ref()
            .filter(|_| with_secrets && machine.mode.takes_token());
        let done_url = token.map(|t| format!("{}/done/{t}", self.base_url));
        let progress_url = token.map(|t| format!("{}/progress/{t}", self.base_url));
        let mut keys: Vec<String> = self.services.lifecycle.default_ssh_keys.clone();
        keys.extend(
            machine
                .ssh_keys
                .lines()
                .map(str::trim)
                .filter(|k| !k.is_empty())
                .map(str::to_string),
        );
        let ip = machine.current_ip();
        let domain = ip.and_then(|ip| {
            self.services
                .subnets
                .iter()
                .find(|s| s.contains(ip))
                .and_then(|s| s.domain.clone())
        });
        let vars = source.map(|s| s.vars.clone()).unwrap_or_default();
        let mirror = vars.get("mirror").map(|url| {
            let (scheme, rest) = url.split_once("://").unwrap_or(("http", url));
            let (host, path) = match rest.find('/') {
                Some(slash) => (&rest[..slash], &rest[slash..]),
                None => (rest, ""),
            };
            context! { url => url.clone(), scheme => scheme, host => host, path => path }
        });
        context! {
            hostname => machine.hostname.clone(),
            domain => domain,
            mac => mac.to_string(),
            ip => ip.map(|ip| ip.to_string()),
            image => image.name.clone(),
            mode => machine.mode.as_str(),
            done_url => done_url,
            progress_url => progress_url,
            ssh_keys => keys,
            base_url => self.base_url.clone(),
            files_url => format!("{}/machines/{}/files", self.base_url, mac.dashed()),
            mirror => mirror,
            iso_url => vars.get("iso_url").cloned(),
            release => vars.get("release").cloned(),
            install_disk => Option::<String>::None,
            console => self.services.images.console.clone(),
        }
    }

    /// The machine's boot configuration for `flavour` now, for a request from
    /// `peer`; records the `http.script` (iPXE) or `tftp.script` (grub) event.
    pub async fn document(
        &self,
        mac: MacAddr,
        peer: Option<Ipv4Addr>,
        flavour: Flavour,
    ) -> Result<Document, BootError> {
        let resolved = self.resolve(mac).await?;
        let machine_path = format!("/boot/{}", mac.dashed());
        let (kind, ctx, summary): (&str, Value, String) = match &resolved {
            None => (
                "unknown",
                context! { mac => mac.to_string() },
                "unknown".into(),
            ),
            Some(Resolved {
                machine,
                plan: BootPlan::Image { with_token, .. },
                image: Some(image),
                source,
            }) => {
                if *with_token {
                    self.check_owner(mac, peer).await?;
                }
                let done_url = machine
                    .token
                    .as_ref()
                    .filter(|_| *with_token)
                    .map(|t| format!("{}/done/{t}", self.base_url));
                // The command line is a template too (a catalog image's carries its
                // preseed URL, console, mirror), rendered with what install files get.
                let install =
                    self.install_context(mac, machine, image, source.as_ref(), *with_token);
                let cmdline = crate::script::render_source(
                    &format!("{} command line", image.name),
                    image.cmdline.clone(),
                    install,
                )
                .map_err(|e| BootError::Render(e.to_string()))?;
                let full_cmdline = match &done_url {
                    Some(url) => format!("{cmdline} rackboot.done={url}"),
                    None => cmdline.clone(),
                };
                let has_initrd = !image.initrd_path.is_empty();
                (
                    "boot",
                    context! {
                        mac => mac.to_string(),
                        hostname => machine.hostname.clone(),
                        ip => machine.current_ip().map(|ip| ip.to_string()),
                        mode => machine.mode.as_str(),
                        image => context! { name => image.name.clone(), cmdline => cmdline },
                        kernel_url => format!("{}{machine_path}/kernel", self.base_url),
                        initrd_url => has_initrd.then(|| format!("{}{machine_path}/initrd", self.base_url)),
                        // grub loads over TFTP from the server it booted from.
                        kernel_path => format!("{machine_path}/kernel"),
                        initrd_path => has_initrd.then(|| format!("{machine_path}/initrd")),
                        grub_cmdline => grub_words(&full_cmdline),
                        files_url => format!("{}/machines/{}/files", self.base_url, mac.dashed()),
                        done_url => done_url,
                        base_url => self.base_url.clone(),
                    },
                    format!("mode={} image={}", machine.mode, image.name),
                )
            }
            Some(Resolved { machine, plan, .. }) => {
                let message = match plan {
                    BootPlan::Refused(why) => Some(why.clone()),
                    BootPlan::Image { image, .. } => Some(format!("image {image} does not exist")),
                    BootPlan::Local => None,
                };
                if let BootPlan::Refused(why) = plan {
                    self.services.store.record_event(
                        clock::now_ms(),
                        Some(mac),
                        "boot.refused",
                        why.clone(),
                    );
                }
                (
                    "local",
                    context! {
                        mac => mac.to_string(),
                        hostname => machine.hostname.clone(),
                        message => message.clone(),
                        grub_message => message.as_deref().map(|m| grub_quote(&format!("rackboot: {m}"))),
                        exit_command => machine.exit_method.command(),
                    },
                    format!(
                        "mode={} local{}",
                        machine.mode,
                        message.map(|m| format!(" ({m})")).unwrap_or_default()
                    ),
                )
            }
        };
        let template = flavour.template(kind);
        let scripts = Arc::clone(&self.scripts);
        let text = tokio::task::spawn_blocking(move || scripts.render(template, ctx))
            .await
            .map_err(|e| BootError::Render(e.to_string()))?
            .map_err(|e| BootError::Render(e.to_string()))?;
        let (event, via) = match flavour {
            Flavour::Ipxe => ("http.script", "http"),
            Flavour::Grub => ("tftp.script", "tftp"),
        };
        self.services.store.record_event(
            clock::now_ms(),
            Some(mac),
            event,
            format!(
                "template={template} {summary} client={}",
                peer.map_or_else(|| "-".into(), |ip| format!("{ip} via {via}"))
            ),
        );
        Ok(Document {
            text,
            template,
            summary,
        })
    }

    /// The image file (`kernel`, `initrd`) the machine boots now, if it boots one.
    pub async fn image_file(
        &self,
        mac: MacAddr,
        file: &str,
    ) -> Result<(Image, PathBuf), BootError> {
        let image = match self.resolve(mac).await? {
            Some(Resolved {
                image: Some(image), ..
            }) => image,
            _ => return Err(BootError::NotFound(format!("{mac} boots no image now"))),
        };
        let path = match file {
            "kernel" => image.kernel_path.clone(),
            "initrd" if !image.initrd_path.is_empty() => image.initrd_path.clone(),
            _ => return Err(BootError::NotFound("not found".into())),
        };
        Ok((image, PathBuf::from(path)))
    }

    /// The machine's unified kernel image now: systemd's EFI stub with the kernel,
    /// initrd and full command line (done-URL included, so only under the secrets
    /// rule) of what its plan boots. Built once per distinct input and cached. A
    /// machine booting locally has none (not found): its firmware moves on to the
    /// next boot entry.
    pub async fn uki(
        &self,
        mac: MacAddr,
        peer: Option<Ipv4Addr>,
    ) -> Result<(Image, PathBuf), BootError> {
        let Some(cache) = self.uki.clone() else {
            return Err(BootError::NotFound("no unified kernel image cache".into()));
        };
        let resolved = self.resolve(mac).await?;
        let Some(Resolved {
            machine,
            plan: BootPlan::Image { with_token, .. },
            image: Some(image),
            source,
        }) = resolved
        else {
            return Err(BootError::NotFound(format!("{mac} boots no image now")));
        };
        if with_token {
            self.check_owner(mac, peer).await?;
        }
        let install = self.install_context(mac, &machine, &image, source.as_ref(), with_token);
        let mut cmdline = crate::script::render_source(
            &format!("{} command line", image.name),
            image.cmdline.clone(),
            install,
        )
        .map_err(|e| BootError::Render(e.to_string()))?;
        if let Some(token) = machine.token.as_ref().filter(|_| with_token) {
            cmdline.push_str(&format!(" rackboot.done={}/done/{token}", self.base_url));
        }
        let arch = Arch::of_recorded_firmware(machine.arch.as_deref());
        let stub_path = self.loaders.of(arch).uki_stub.clone();
        let osrel = format!(
            "NAME=\"rackboot {}\"\nID=rackboot\nPRETTY_NAME=\"{} for {mac}\"\n",
            image.name, image.name
        );
        let built = {
            let image = image.clone();
            tokio::task::spawn_blocking(move || {
                let stub = std::fs::read(&stub_path).map_err(|e| {
                    BootError::NotFound(format!(
                        "systemd's EFI stub {} cannot be read ({e}): install systemd-boot-efi \
                         or set boot.{arch}.uki_stub",
                        stub_path.display()
                    ))
                })?;
                let kernel = crate::uki::ImageFile {
                    path: Path::new(&image.kernel_path),
                    // Images registered before digests were recorded have none.
                    sha256: Some(image.kernel_sha256.as_str()).filter(|s| !s.is_empty()),
                };
                let initrd = (!image.initrd_path.is_empty()).then(|| crate::uki::ImageFile {
                    path: Path::new(&image.initrd_path),
                    sha256: Some(image.initrd_sha256.as_str()).filter(|s| !s.is_empty()),
                });
                cache
                    .get_or_build(
                        &stub,
                        &crate::uki::UkiInputs {
                            osrel: osrel.as_bytes(),
                            cmdline: cmdline.as_bytes(),
                            kernel,
                            initrd,
                        },
                    )
                    .map_err(|e| BootError::Render(format!("unified kernel image: {e}")))
            })
            .await
            .map_err(|e| BootError::Render(e.to_string()))??
        };
        Ok((image, built))
    }

    /// A TFTP request for one of rackboot's own files: shim and grub by the names
    /// DHCP hands out, grub's fixed `grub.cfg`, each machine's `boot/MAC.grub`, and
    /// the kernel and initrd that configuration names. `None`: not one of these (the
    /// TFTP directories are looked in).
    pub async fn tftp_file(
        &self,
        path: &Path,
        client: Option<Ipv4Addr>,
    ) -> Option<Result<TftpFile, BootError>> {
        let text = path.to_str()?;
        let loader = match text {
            lifecycle::SHIM_X64 => Some((Arch::Amd64, false)),
            lifecycle::GRUB_X64 => Some((Arch::Amd64, true)),
            lifecycle::SHIM_AA64 => Some((Arch::Arm64, false)),
            lifecycle::GRUB_AA64 => Some((Arch::Arm64, true)),
            _ => None,
        };
        if let Some((arch, grub)) = loader {
            // The image the asking machine boots may carry its distribution's own
            // (its grub trusts its kernels); else the configured pair.
            if let Some(own) = self.image_loader(client, text).await {
                return Some(Ok(TftpFile::Path(own)));
            }
            let files = self.loaders.of(arch);
            let file = if grub { &files.grub } else { &files.shim };
            return Some(Ok(TftpFile::Path(file.clone())));
        }
        if text == "grub/grub.cfg" || text.ends_with("/grub/grub.cfg") {
            return Some(Ok(TftpFile::Text(GRUB_ENTRY.to_string())));
        }
        let rest = text.strip_prefix("boot/")?;
        if let Some(mac_text) = rest.strip_suffix(".efi") {
            let mac = MacAddr::parse(mac_text).ok()?;
            return Some(
                self.uki(mac, client)
                    .await
                    .map(|(_, path)| TftpFile::Path(path)),
            );
        }
        if let Some(mac_text) = rest.strip_suffix(".grub") {
            let mac = MacAddr::parse(mac_text).ok()?;
            return Some(
                self.document(mac, client, Flavour::Grub)
                    .await
                    .map(|doc| TftpFile::Text(doc.text)),
            );
        }
        let (mac_text, file) = rest.split_once('/')?;
        let mac = MacAddr::parse(mac_text).ok()?;
        if file != "kernel" && file != "initrd" {
            return None;
        }
        Some(
            self.image_file(mac, file)
                .await
                .map(|(_, path)| TftpFile::Path(path)),
        )
    }
}

impl BootDocs {
    /// The image's own shim or grub (`name`, as served) for the machine at
    /// `client`, when the image it boots now carries one.
    async fn image_loader(&self, client: Option<Ipv4Addr>, name: &str) -> Option<PathBuf> {
        let ip = client?;
        let (mac, _) = self
            .secrets
            .machine_at(&self.services.store, ip, clock::now_ms() / 1000)
            .await
            .ok()??;
        let image = self.resolve(mac).await.ok()??.image?;
        let own = Path::new(&image.kernel_path).parent()?.join(name);
        let found = own.clone();
        tokio::task::spawn_blocking(move || found.is_file())
            .await
            .unwrap_or(false)
            .then_some(own)
    }
}

fn wrong_arch(image: &Image, arch: Arch) -> String {
    format!(
        "image {} is built for {}, and this machine is {arch}: it is not handed a kernel it \
         cannot run; assign an image for {arch}",
        image.name,
        lifecycle::arches_text(&image.arches)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grub_words_reach_the_kernel_as_written() {
        assert_eq!(grub_quote("console=ttyS0"), "'console=ttyS0'");
        assert_eq!(grub_quote("a'b"), r"'a'\''b'");
        assert_eq!(
            grub_words("  url=http://x/p?a=1;b=$c  quiet "),
            "'url=http://x/p?a=1;b=$c' 'quiet'"
        );
    }

    #[test]
    fn the_grub_entry_sources_the_machines_own_file() {
        assert!(GRUB_ENTRY.contains("source /boot/${net_default_mac}.grub"));
        // Without a file for the MAC, grub says so and leaves to the next boot entry.
        assert!(GRUB_ENTRY.trim_end().ends_with("exit 1"));
    }
}
