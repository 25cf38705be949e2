//! Which program set serves which `--language`. A new language is a
//! [`ProgramSet`](crate::driver::ProgramSet) with a decoder, and an arm here.

use ferrotel_api::probe_config::Language;

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
