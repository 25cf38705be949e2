//! Which program set serves which `--language`. A new language is a
//! [`ProgramSet`](crate::driver::ProgramSet) with a decoder, and an arm here.

use ferrotel_api::probe_config::Language;
use ferrotel_probe_ebpf::contract;

use crate::driver;
use crate::frontend::{Frontend, FrontendContext};
use crate::go::GoSet;
use crate::sockets::SocketSet;

/// The front-end of `--language`: that language's program set, loaded with
/// the language's tuning and run by the driver.
#[derive(Clone, Copy, Debug, Default)]
pub struct LanguageFrontend;

impl Frontend for LanguageFrontend {
    async fn run(self, ctx: FrontendContext) -> anyhow::Result<()> {
        let tuning = ctx.tuning().clone();
        match ctx.language {
            Language::Go => {
                let set = GoSet::new(&tuning, ctx.spans.sampler().clone());
                driver::run_language(set, ctx).await
            }
            // Socket-level HTTP/1.x: the interpreter does not matter.
            Language::Python => {
                let set = SocketSet::new(&tuning, ctx.spans.clone());
                driver::run_language(set, ctx).await
            }
        }
    }
}

/// The kernel object of `language`'s program set (its name in
/// [`contract::OBJECTS`]).
fn object(language: Language) -> &'static str {
    match language {
        Language::Go => "go",
        Language::Python => "sockets",
    }
}

/// Whether `language`'s probe attaches tracepoints that aya finds through
/// tracefs: syscall tracepoints (their ids are read under
/// `<tracefs>/events/`). Uprobes (through the uprobe PMU) and BTF
/// tracepoints (discovery, process lifecycles) need none, so only such a
/// probe mounts a private tracefs where the node has none
/// ([`crate::tracefs`]).
pub fn needs_tracefs(language: Language) -> bool {
    contract::OBJECTS
        .iter()
        .any(|o| o.object == object(language) && !o.syscall_programs.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_language_names_an_object_of_the_contract() {
        for language in Language::ALL {
            assert!(
                contract::OBJECTS
                    .iter()
                    .any(|o| o.object == object(language)),
                "{language}: no object {} in the contract",
                object(language)
            );
        }
    }

    #[test]
    fn only_the_syscall_tracing_set_needs_tracefs() {
        assert!(
            needs_tracefs(Language::Python),
            "socket-level syscall tracepoints"
        );
        assert!(!needs_tracefs(Language::Go), "uprobes only");
        let discovery = contract::OBJECTS
            .iter()
            .find(|o| o.object == "discovery")
            .expect("discovery object");
        assert!(
            discovery.syscall_programs.is_empty(),
            "discovery must keep to BTF tracepoints: every probe loads it"
        );
    }
}
