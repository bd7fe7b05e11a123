//! A node shim that plays the kubelet for the sidecar-capture tests: every Pod the API server
//! holds becomes a network namespace on a [`Lan`], with its address written to the Pod's
//! status, its volumes made real (emptyDir, ConfigMap, Secret, projected service-account
//! tokens from the TokenRequest API), its init containers run to completion in order, and
//! then its containers started. An init container with `restartPolicy: Always` (a native
//! sidecar) is started in the background like a container, and the next one follows at once.
//! A container's `command` and `args` run as the process of the same name found on the shim's
//! `PATH` (images are not pulled), with the container's environment (values and the downward
//! API), Kubernetes' `$(VAR)` expansion, its volume mounts bind-mounted in a mount namespace
//! of its own, and its `runAsUser`.
//!
//! It is a test harness, not a kubelet: no probes (so a native sidecar's `startupProbe` does
//! not hold the containers after it), lifecycle hooks, restarts, resources or image
//! handling.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use serde_json::{Value, json};

use crate::{
    Process,
    netns::{Lan, Netns},
};

/// A Pod the shim runs: its namespace and processes.
pub struct RunningPod {
    /// The Pod's network namespace.
    pub netns: Netns,
    /// Its containers, killed on drop.
    pub processes: Vec<Process>,
}

/// The shim.
pub struct Kubelet {
    kubectl: Box<dyn Fn() -> Command>,
    dir: PathBuf,
    path: String,
    pods: BTreeMap<String, RunningPod>,
    failed: BTreeSet<String>,
}

impl Kubelet {
    /// A shim that reaches the API server through `kubectl()` (a kubectl command with its
    /// kubeconfig set, run where the API server is reachable), keeps Pods' files under `dir`,
    /// and finds containers' programs on `path` (a `PATH` value).
    pub fn new(kubectl: impl Fn() -> Command + 'static, dir: &Path, path: String) -> Kubelet {
        Kubelet {
            kubectl: Box::new(kubectl),
            dir: dir.to_owned(),
            path,
            pods: BTreeMap::new(),
            failed: BTreeSet::new(),
        }
    }

    /// The running Pod `namespace/name`.
    pub fn pod(&self, namespace: &str, name: &str) -> Option<&RunningPod> {
        self.pods.get(&format!("{namespace}/{name}"))
    }

    fn kubectl(&self, args: &[&str]) -> Result<String, String> {
        let out = (self.kubectl)()
            .args(args)
            .output()
            .map_err(|e| format!("kubectl: {e}"))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(format!(
                "kubectl {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    }

    /// Starts every Pod the API server holds that is not running yet. A Pod that cannot start
    /// is reported once (and not retried).
    pub fn sync(&mut self, lan: &mut Lan) -> Result<(), String> {
        let list: Value =
            serde_json::from_str(&self.kubectl(&["get", "pods", "-A", "-o", "json"])?)
                .map_err(|e| format!("pod list: {e}"))?;
        for pod in list["items"].as_array().into_iter().flatten() {
            let key = format!(
                "{}/{}",
                pod["metadata"]["namespace"].as_str().unwrap_or_default(),
                pod["metadata"]["name"].as_str().unwrap_or_default()
            );
            if self.pods.contains_key(&key) || self.failed.contains(&key) {
                continue;
            }
            match self.start(lan, pod) {
                Ok(running) => {
                    self.pods.insert(key, running);
                }
                Err(e) => {
                    self.failed.insert(key.clone());
                    return Err(format!("Pod {key}: {e}"));
                }
            }
        }
        Ok(())
    }

    fn start(&self, lan: &mut Lan, pod: &Value) -> Result<RunningPod, String> {
        let meta = &pod["metadata"];
        let (namespace, name) = (
            meta["namespace"].as_str().unwrap_or("default"),
            meta["name"].as_str().unwrap_or_default(),
        );
        let netns = lan.pod(&format!("p{}", lan_index(name)));
        let status = json!({"status": {"podIP": netns.ip.to_string(),
            "podIPs": [{"ip": netns.ip.to_string()}], "phase": "Running",
            "hostIP": crate::netns::NODE_ADDRESS.to_string()}});
        self.kubectl(&[
            "patch",
            "pod",
            name,
            "-n",
            namespace,
            "--subresource=status",
            "--type=merge",
            "-p",
            &status.to_string(),
        ])?;
        let dir = self.dir.join(format!("{namespace}-{name}"));
        let volumes = self.volumes(pod, namespace, &dir)?;
        let mut running = RunningPod {
            netns,
            processes: Vec::new(),
        };
        let spec = &pod["spec"];
        for c in spec["initContainers"].as_array().into_iter().flatten() {
            if c["restartPolicy"] == "Always" {
                running
                    .processes
                    .push(self.spawn(&running.netns, pod, c, &volumes, &dir)?);
                continue;
            }
            let mut cmd = self.container(&running.netns, pod, c, &volumes)?;
            let out = cmd.output().map_err(|e| format!("init container: {e}"))?;
            if !out.status.success() {
                return Err(format!(
                    "init container {} failed: {}{}",
                    c["name"],
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                ));
            }
        }
        for c in spec["containers"].as_array().into_iter().flatten() {
            running
                .processes
                .push(self.spawn(&running.netns, pod, c, &volumes, &dir)?);
        }
        Ok(running)
    }

    /// Starts container `c` in the background, its stderr in `dir/NAME.log`.
    fn spawn(
        &self,
        netns: &Netns,
        pod: &Value,
        c: &Value,
        volumes: &BTreeMap<String, PathBuf>,
        dir: &Path,
    ) -> Result<Process, String> {
        let log = std::fs::File::create(
            dir.join(format!("{}.log", c["name"].as_str().unwrap_or("container"))),
        )
        .map_err(|e| e.to_string())?;
        let child = self
            .container(netns, pod, c, volumes)?
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("container {}: {e}", c["name"]))?;
        Ok(Process(child))
    }

    /// Makes the Pod's volumes real under `dir/volumes`: their host paths by name.
    fn volumes(
        &self,
        pod: &Value,
        namespace: &str,
        dir: &Path,
    ) -> Result<BTreeMap<String, PathBuf>, String> {
        let account = pod["spec"]["serviceAccountName"]
            .as_str()
            .unwrap_or("default");
        let mut out = BTreeMap::new();
        for v in pod["spec"]["volumes"].as_array().into_iter().flatten() {
            let name = v["name"].as_str().unwrap_or_default().to_owned();
            let path = dir.join("volumes").join(&name);
            std::fs::create_dir_all(&path).map_err(|e| e.to_string())?;
            if v.get("emptyDir").is_some() {
            } else if let Some(projected) = v.get("projected") {
                for source in projected["sources"].as_array().into_iter().flatten() {
                    if !self.source_files(source, account, namespace, &path)? {
                        return Err(format!(
                            "volume {name}: projected source {source} is not supported"
                        ));
                    }
                }
            } else if !self.source_files(v, account, namespace, &path)? {
                return Err(format!(
                    "volume {name}: only emptyDir, configMap, secret and projected"
                ));
            }
            out.insert(name, path);
        }
        crate::run(Command::new("chmod").args(["-R", "a+rX"]).arg(dir));
        Ok(out)
    }

    /// Writes into `dir` what a volume (or projected) source holds: a ConfigMap's or
    /// Secret's keys, or a service-account token from the TokenRequest API. `false` for a
    /// source of another kind.
    fn source_files(
        &self,
        source: &Value,
        account: &str,
        namespace: &str,
        dir: &Path,
    ) -> Result<bool, String> {
        if let Some(cm) = source.get("configMap") {
            let name = cm["name"].as_str().unwrap_or_default();
            self.object_files("configmap", name, namespace, dir, false)?;
        } else if let Some(secret) = source.get("secret") {
            let name = secret["secretName"].as_str().unwrap_or_default();
            self.object_files("secret", name, namespace, dir, true)?;
        } else if let Some(token) = source.get("serviceAccountToken") {
            let mut args = vec!["create", "token", account, "-n", namespace];
            let duration = token["expirationSeconds"].as_u64().map(|s| format!("{s}s"));
            if let Some(aud) = token["audience"].as_str() {
                args.extend(["--audience", aud]);
            }
            if let Some(d) = duration.as_deref() {
                args.extend(["--duration", d]);
            }
            let jwt = self.kubectl(&args)?;
            let file = token["path"].as_str().unwrap_or("token");
            std::fs::write(dir.join(file), jwt.trim()).map_err(|e| e.to_string())?;
        } else {
            return Ok(false);
        }
        Ok(true)
    }

    /// Writes each key of a ConfigMap or Secret as a file, waiting for it to exist.
    fn object_files(
        &self,
        kind: &str,
        name: &str,
        namespace: &str,
        dir: &Path,
        base64: bool,
    ) -> Result<(), String> {
        let object: Value = crate::try_wait_for(
            &format!("{kind} {namespace}/{name}"),
            std::time::Duration::from_secs(30),
            || {
                self.kubectl(&["get", kind, name, "-n", namespace, "-o", "json"])
                    .ok()
                    .and_then(|t| serde_json::from_str(&t).ok())
            },
        )?;
        for (key, value) in object["data"].as_object().into_iter().flatten() {
            let text = value.as_str().unwrap_or_default();
            let bytes = if base64 {
                use std::io::Write;
                let mut child = Command::new("base64")
                    .arg("-d")
                    .stdin(Stdio::piped())
                    .stdout(Stdio::piped())
                    .spawn()
                    .map_err(|e| e.to_string())?;
                child
                    .stdin
                    .take()
                    .map(|mut s| s.write_all(text.as_bytes()))
                    .transpose()
                    .map_err(|e| e.to_string())?;
                child.wait_with_output().map_err(|e| e.to_string())?.stdout
            } else {
                text.as_bytes().to_vec()
            };
            std::fs::write(dir.join(key), bytes).map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    /// The command that runs container `c` of `pod` in `netns`: a mount namespace of its own
    /// with the volume mounts bound in, then the program as the container's user.
    fn container(
        &self,
        netns: &Netns,
        pod: &Value,
        c: &Value,
        volumes: &BTreeMap<String, PathBuf>,
    ) -> Result<Command, String> {
        let env = environment(pod, c, &netns.ip.to_string());
        let words: Vec<String> = c["command"]
            .as_array()
            .into_iter()
            .flatten()
            .chain(c["args"].as_array().into_iter().flatten())
            .map(|w| expand(w.as_str().unwrap_or_default(), &env))
            .collect();
        if words.is_empty() {
            return Err(format!(
                "container {}: no command (images are not run here)",
                c["name"]
            ));
        }
        let mut script = String::from("set -e\n");
        for m in c["volumeMounts"].as_array().into_iter().flatten() {
            let volume = m["name"].as_str().unwrap_or_default();
            let source = volumes
                .get(volume)
                .ok_or_else(|| format!("container {}: no volume {volume}", c["name"]))?;
            let target = m["mountPath"].as_str().unwrap_or_default();
            script.push_str(&format!(
                "mkdir -p '{target}'\nmount --bind '{}' '{target}'\n",
                source.display()
            ));
        }
        let user = c["securityContext"]["runAsUser"]
            .as_u64()
            .or_else(|| pod["spec"]["securityContext"]["runAsUser"].as_u64());
        let group = c["securityContext"]["runAsGroup"].as_u64().or(user);
        match user {
            Some(uid) if uid != 0 => script.push_str(&format!(
                "exec setpriv --reuid={uid} --regid={} --clear-groups \"$@\"\n",
                group.unwrap_or(uid)
            )),
            _ => script.push_str("exec \"$@\"\n"),
        }
        let mut cmd = netns.command("unshare");
        cmd.args([
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            &script,
            "sh",
        ])
        .args(&words)
        .env_clear()
        .env("PATH", &self.path)
        .envs(&env);
        Ok(cmd)
    }
}

/// A short, stable tag for a Pod's namespace name.
fn lan_index(name: &str) -> String {
    name.chars()
        .filter(char::is_ascii_alphanumeric)
        .take(40)
        .collect()
}

/// A container's environment: its values and the downward API fields a sidecar needs.
fn environment(pod: &Value, c: &Value, ip: &str) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    for e in c["env"].as_array().into_iter().flatten() {
        let name = e["name"].as_str().unwrap_or_default().to_owned();
        let value = if let Some(v) = e["value"].as_str() {
            expand(v, &env)
        } else if let Some(path) = e["valueFrom"]["fieldRef"]["fieldPath"].as_str() {
            match path {
                "status.podIP" | "status.podIPs" => ip.to_owned(),
                "status.hostIP" | "status.hostIPs" => crate::netns::NODE_ADDRESS.to_string(),
                "metadata.name" => pod["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                "metadata.namespace" => pod["metadata"]["namespace"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                "metadata.uid" => pod["metadata"]["uid"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                "spec.serviceAccountName" => pod["spec"]["serviceAccountName"]
                    .as_str()
                    .unwrap_or("default")
                    .to_owned(),
                "spec.nodeName" => "node".to_owned(),
                other => label_or_annotation(pod, other).unwrap_or_default(),
            }
        } else {
            String::new()
        };
        env.insert(name, value);
    }
    env
}

fn label_or_annotation(pod: &Value, path: &str) -> Option<String> {
    let (map, key) = path
        .strip_prefix("metadata.labels['")
        .map(|k| ("labels", k))
        .or_else(|| {
            path.strip_prefix("metadata.annotations['")
                .map(|k| ("annotations", k))
        })?;
    pod["metadata"][map][key.trim_end_matches("']")]
        .as_str()
        .map(str::to_owned)
}

/// Kubernetes' `$(VAR)` expansion: a defined variable is replaced, `$$` is a literal `$`, and
/// anything else is kept as written.
pub fn expand(text: &str, env: &BTreeMap<String, String>) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        if let Some(after) = tail.strip_prefix("$$") {
            out.push('$');
            rest = after;
        } else if let Some(inner) = tail.strip_prefix("$(")
            && let Some(end) = inner.find(')')
            && let Some(value) = env.get(&inner[..end])
        {
            out.push_str(value);
            rest = &inner[end + 1..];
        } else {
            out.push('$');
            rest = &tail[1..];
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expansion_follows_kubernetes() {
        let env = BTreeMap::from([("IP".to_owned(), "10.0.0.1".to_owned())]);
        assert_eq!(expand("sidecar~$(IP)~x", &env), "sidecar~10.0.0.1~x");
        assert_eq!(expand("$(MISSING) $$(IP) $", &env), "$(MISSING) $(IP) $");
    }
}
