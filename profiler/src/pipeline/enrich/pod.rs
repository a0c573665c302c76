//! Kubernetes pods from cgroup paths: `QoS` class, pod UID and container id.
//!
//! The kubelet names pod cgroups `kubepods[/burstable|/besteffort]/pod<UID>` (cgroupfs driver) or,
//! with the systemd driver, `kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<UID
//! with '-' as '_'>.slice` (kubelet `CgroupName.ToSystemd`); Guaranteed pods sit directly under
//! `kubepods`. A kubelet with its own cgroup root (kind: `kubelet.slice/kubelet-kubepods…`) adds
//! a prefix. Containers are the next level: the bare 64-hex id (containerd, cgroupfs),
//! `cri-containerd-<id>.scope`, `crio-<id>.scope` or `docker-<id>.scope` (systemd). The same
//! names appear on cgroup v1 (per controller) and v2 (unified).
//! Docker/podman containers outside Kubernetes are attributed by `enrich::container`.

/// A pod's `QoS` class (its cgroup parent).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Qos {
    Guaranteed,
    Burstable,
    BestEffort,
}

impl Qos {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Guaranteed => "guaranteed",
            Self::Burstable => "burstable",
            Self::BestEffort => "besteffort",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodCgroup {
    pub qos: Qos,
    /// With dashes, as the API server shows it (or a static pod's 32-hex hash).
    pub pod_uid: String,
    /// None for the pod-level cgroup itself (or a runtime helper such as crio's conmon).
    pub container_id: Option<String>,
}

fn is_uid(s: &str) -> bool {
    (32..=36).contains(&s.len())
        && s.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-')
        && s.bytes().filter(u8::is_ascii_hexdigit).count() == 32
}

fn is_container_id(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// The pod part of one path component, cgroupfs (`burstable`, `pod<uid>`) or systemd
/// (`[prefix-]kubepods[-qos][-pod<uid>].slice`).
enum Step {
    Kubepods,
    Qos(Qos),
    Pod(Option<Qos>, String),
    Other,
}

fn qos_word(w: &str) -> Option<Qos> {
    match w {
        "burstable" => Some(Qos::Burstable),
        "besteffort" => Some(Qos::BestEffort),
        _ => None,
    }
}

fn step(component: &str) -> Step {
    if let Some(slice) = component.strip_suffix(".slice") {
        let parts: Vec<&str> = slice.split('-').collect();
        let Some(k) = parts.iter().position(|p| *p == "kubepods") else {
            return Step::Other;
        };
        let rest = &parts[k + 1..];
        let (qos, rest) = match rest.first().and_then(|w| qos_word(w)) {
            Some(q) => (Some(q), &rest[1..]),
            None => (None, rest),
        };
        return match rest {
            [] => qos.map_or(Step::Kubepods, Step::Qos),
            [pod] => match pod.strip_prefix("pod").map(|u| u.replace('_', "-")) {
                Some(uid) if is_uid(&uid) => Step::Pod(qos, uid),
                _ => Step::Other,
            },
            _ => Step::Other,
        };
    }
    if component == "kubepods" {
        return Step::Kubepods;
    }
    if let Some(q) = qos_word(component) {
        return Step::Qos(q);
    }
    match component.strip_prefix("pod") {
        Some(uid) if is_uid(uid) => Step::Pod(None, uid.to_owned()),
        _ => Step::Other,
    }
}

fn container_of(component: &str) -> Option<String> {
    let id = component.strip_suffix(".scope").unwrap_or(component);
    let id = ["cri-containerd-", "crio-", "docker-"]
        .iter()
        .find_map(|p| id.strip_prefix(p))
        .unwrap_or(id);
    is_container_id(id).then(|| id.to_owned())
}

/// Parses a cgroup path (or a whole `/proc/PID/cgroup` line, `N:controllers:/path`).
/// None when the path is not inside a Kubernetes pod.
pub fn parse(cgroup: &str) -> Option<PodCgroup> {
    let path = &cgroup[cgroup.find('/')?..];
    let mut in_kubepods = false;
    let mut qos = Qos::Guaranteed;
    let mut comps = path.split('/').filter(|c| !c.is_empty());
    for c in comps.by_ref() {
        match step(c) {
            Step::Kubepods => in_kubepods = true,
            Step::Qos(q) if in_kubepods => qos = q,
            Step::Pod(q, uid) if in_kubepods => {
                return Some(PodCgroup {
                    qos: q.unwrap_or(qos),
                    pod_uid: uid,
                    container_id: comps.next().and_then(container_of),
                });
            }
            _ if in_kubepods => return None,
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const UID: &str = "8e3f2b1c-5d4a-4c3b-9e2f-1a0b9c8d7e6f";
    const CID: &str = "2f9c1e0b7d8a6c5b4e3d2c1b0a9f8e7d6c5b4a3928171605f4e3d2c1b0a99887";

    #[expect(clippy::unnecessary_wraps, reason = "compared with parse()'s Option")]
    fn pod(qos: Qos, cid: Option<&str>) -> Option<PodCgroup> {
        Some(PodCgroup {
            qos,
            pod_uid: UID.to_owned(),
            container_id: cid.map(str::to_owned),
        })
    }

    #[test]
    fn cgroupfs_driver() {
        let u = UID;
        // containerd (cgroup v1 line with its controller; v2 unified line)
        assert_eq!(
            parse(&format!("4:memory:/kubepods/burstable/pod{u}/{CID}")),
            pod(Qos::Burstable, Some(CID))
        );
        assert_eq!(
            parse(&format!("0::/kubepods/besteffort/pod{u}/{CID}")),
            pod(Qos::BestEffort, Some(CID))
        );
        // Guaranteed pods sit right under kubepods; the pod cgroup itself has no container.
        assert_eq!(
            parse(&format!("/kubepods/pod{u}/{CID}")),
            pod(Qos::Guaranteed, Some(CID))
        );
        assert_eq!(
            parse(&format!("/kubepods/pod{u}")),
            pod(Qos::Guaranteed, None)
        );
        // cri-o with cgroupfs names its container cgroups crio-<id>
        assert_eq!(
            parse(&format!("12:pids:/kubepods/burstable/pod{u}/crio-{CID}")),
            pod(Qos::Burstable, Some(CID))
        );
    }

    #[test]
    fn systemd_driver() {
        let us = UID.replace('-', "_");
        assert_eq!(
            parse(&format!(
                "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{us}.slice/cri-containerd-{CID}.scope"
            )),
            pod(Qos::Burstable, Some(CID))
        );
        assert_eq!(
            parse(&format!(
                "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{us}.slice/crio-{CID}.scope"
            )),
            pod(Qos::BestEffort, Some(CID))
        );
        assert_eq!(
            parse(&format!(
                "7:cpu,cpuacct:/kubepods.slice/kubepods-pod{us}.slice/docker-{CID}.scope"
            )),
            pod(Qos::Guaranteed, Some(CID))
        );
        // kind: the kubelet's own cgroup root prefixes every name.
        assert_eq!(
            parse(&format!(
                "0::/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/kubelet-kubepods-besteffort-pod{us}.slice/cri-containerd-{CID}.scope"
            )),
            pod(Qos::BestEffort, Some(CID))
        );
        // crio's conmon runs in the pod but is no container.
        assert_eq!(
            parse(&format!(
                "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{us}.slice/crio-conmon-{CID}.scope"
            )),
            pod(Qos::Burstable, None)
        );
    }

    #[test]
    fn static_pod_uid_is_a_hash() {
        let hash = "d41d8cd98f00b204e9800998ecf8427e";
        let p = parse(&format!("/kubepods/burstable/pod{hash}/{CID}")).unwrap();
        assert_eq!(p.pod_uid, hash);
    }

    #[test]
    fn not_a_pod() {
        for path in [
            format!("0::/system.slice/docker-{CID}.scope"),
            format!("/docker/{CID}"),
            "/user.slice/user-0.slice/session-1.scope".to_owned(),
            "/kubepods".to_owned(),
            "/kubepods.slice/kubepods-burstable.slice".to_owned(),
            "/kubepods/burstable/podnot-a-uid".to_owned(),
            format!("/kubepods/burstable/x/pod{UID}"),
            format!("/other/pod{UID}/{CID}"),
            String::new(),
            "0::/".to_owned(),
        ] {
            assert_eq!(parse(&path), None, "{path}");
        }
    }
}
