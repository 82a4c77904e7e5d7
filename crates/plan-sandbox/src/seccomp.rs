//! The seccomp filters installed in the bubblewrap sandbox, built with `seccompiler`.
//!
//! Two filters, because a filter has one action for all its matches:
//! - *deny* returns `EPERM` for sockets other than `AF_UNIX` (vsock and netlink too: a
//!   network namespace does not cut vsock), `ptrace`, `process_vm_readv/writev`,
//!   `io_uring_*`, `bpf`, `perf_event_open`, keyrings, `userfaultfd`, mount and namespace
//!   calls, `chroot`, module and kexec calls, `open_by_handle_at`, `TIOCSTI`/`TIOCLINUX`
//!   ioctls and `clone` with namespace flags; on x86_64 it also refuses x32 syscall numbers.
//! - *clone3* returns `ENOSYS` for `clone3` (its flags live in memory a filter cannot read),
//!   so that libc falls back to `clone`, which the deny filter checks.

use std::collections::BTreeMap;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch, sock_filter,
};

use super::SandboxError;

/// The filters as raw BPF bytes, in the order bwrap should load them.
pub(crate) fn filters() -> Result<Vec<Vec<u8>>, SandboxError> {
    let arch = target_arch()?;
    let deny = deny_program(arch)?;
    let clone3 = compile(
        [(libc::SYS_clone3, vec![])].into_iter().collect(),
        libc::ENOSYS,
        arch,
    )?;
    Ok(vec![to_bytes(&deny), to_bytes(&clone3)])
}

fn target_arch() -> Result<TargetArch, SandboxError> {
    TargetArch::try_from(std::env::consts::ARCH).map_err(|_| SandboxError::Unavailable {
        backend: "bwrap",
        reason: format!(
            "no seccomp filter for the {} architecture (x86_64, aarch64 and riscv64 are \
             supported); choose the `process` backend to run unisolated",
            std::env::consts::ARCH
        ),
    })
}

fn err(e: seccompiler::BackendError) -> SandboxError {
    SandboxError::Setup(format!("building the seccomp filter failed: {e}"))
}

fn cond(arg: u8, op: SeccompCmpOp, value: u64) -> Result<SeccompCondition, SandboxError> {
    SeccompCondition::new(arg, SeccompCmpArgLen::Qword, op, value).map_err(err)
}

fn dword(arg: u8, op: SeccompCmpOp, value: u64) -> Result<SeccompCondition, SandboxError> {
    SeccompCondition::new(arg, SeccompCmpArgLen::Dword, op, value).map_err(err)
}

fn rule(conditions: Vec<SeccompCondition>) -> Result<SeccompRule, SandboxError> {
    SeccompRule::new(conditions).map_err(err)
}

/// Syscalls denied whatever their arguments.
const DENIED: &[libc::c_long] = &[
    libc::SYS_ptrace,
    libc::SYS_process_vm_readv,
    libc::SYS_process_vm_writev,
    libc::SYS_io_uring_setup,
    libc::SYS_io_uring_enter,
    libc::SYS_io_uring_register,
    libc::SYS_bpf,
    libc::SYS_perf_event_open,
    libc::SYS_keyctl,
    libc::SYS_add_key,
    libc::SYS_request_key,
    libc::SYS_userfaultfd,
    libc::SYS_mount,
    libc::SYS_umount2,
    libc::SYS_unshare,
    libc::SYS_setns,
    libc::SYS_pivot_root,
    libc::SYS_chroot,
    libc::SYS_open_tree,
    libc::SYS_move_mount,
    libc::SYS_fsopen,
    libc::SYS_fsconfig,
    libc::SYS_fsmount,
    libc::SYS_fspick,
    libc::SYS_mount_setattr,
    libc::SYS_kexec_load,
    libc::SYS_kexec_file_load,
    libc::SYS_init_module,
    libc::SYS_finit_module,
    libc::SYS_delete_module,
    libc::SYS_reboot,
    libc::SYS_swapon,
    libc::SYS_swapoff,
    libc::SYS_acct,
    libc::SYS_quotactl,
    libc::SYS_open_by_handle_at,
    libc::SYS_name_to_handle_at,
    libc::SYS_syslog,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_iopl,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_ioperm,
];

const NAMESPACE_FLAGS: &[libc::c_int] = &[
    libc::CLONE_NEWNS,
    libc::CLONE_NEWUSER,
    libc::CLONE_NEWPID,
    libc::CLONE_NEWNET,
    libc::CLONE_NEWIPC,
    libc::CLONE_NEWUTS,
    libc::CLONE_NEWCGROUP,
];

fn deny_program(arch: TargetArch) -> Result<BpfProgram, SandboxError> {
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    for &nr in DENIED {
        rules.insert(nr, vec![]);
    }
    // Only AF_UNIX sockets (no AF_INET/INET6/VSOCK/NETLINK/PACKET/...).
    rules.insert(
        libc::SYS_socket,
        vec![rule(vec![dword(
            0,
            SeccompCmpOp::Ne,
            libc::AF_UNIX as u64,
        )?])?],
    );
    // Terminal injection.
    rules.insert(
        libc::SYS_ioctl,
        vec![
            rule(vec![dword(1, SeccompCmpOp::Eq, libc::TIOCSTI)?])?,
            rule(vec![dword(1, SeccompCmpOp::Eq, libc::TIOCLINUX)?])?,
        ],
    );
    // clone that would create namespaces.
    let mut clone_rules = Vec::new();
    for &flag in NAMESPACE_FLAGS {
        let flag = flag as u64;
        clone_rules.push(rule(vec![cond(0, SeccompCmpOp::MaskedEq(flag), flag)?])?);
    }
    rules.insert(libc::SYS_clone, clone_rules);

    let mut program = compile(rules, libc::EPERM, arch)?;
    if arch == TargetArch::x86_64 {
        // x32 syscalls share the x86_64 audit arch but set bit 30 of the number, which
        // would slip past exact-number rules: refuse them all first.
        const X32_SYSCALL_BIT: u32 = 0x4000_0000;
        let prelude = vec![
            // A = seccomp_data.nr
            sock_filter {
                code: 0x20,
                jt: 0,
                jf: 0,
                k: 0,
            },
            // if A >= X32 bit: next instruction, else skip it
            sock_filter {
                code: 0x35,
                jt: 0,
                jf: 1,
                k: X32_SYSCALL_BIT,
            },
            sock_filter {
                code: 0x06,
                jt: 0,
                jf: 0,
                k: libc::SECCOMP_RET_ERRNO | libc::EPERM as u32,
            },
        ];
        program.splice(0..0, prelude);
    }
    Ok(program)
}

fn compile(
    rules: BTreeMap<i64, Vec<SeccompRule>>,
    errno: libc::c_int,
    arch: TargetArch,
) -> Result<BpfProgram, SandboxError> {
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(errno as u32),
        arch,
    )
    .map_err(err)?;
    BpfProgram::try_from(filter).map_err(err)
}

fn to_bytes(program: &[sock_filter]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(program.len() * 8);
    for ins in program {
        bytes.extend_from_slice(&ins.code.to_ne_bytes());
        bytes.push(ins.jt);
        bytes.push(ins.jf);
        bytes.extend_from_slice(&ins.k.to_ne_bytes());
    }
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_build_for_this_arch() {
        let f = filters().unwrap();
        assert_eq!(f.len(), 2);
        assert!(f.iter().all(|p| !p.is_empty() && p.len() % 8 == 0));
    }
}
