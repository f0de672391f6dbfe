//! Figures for `squall bench sandbox`: the raw wasmtime floor for the same
//! component, measured in the same process as Squall's full path.

use std::time::{Duration, Instant};

use wasmtime::Store;

use crate::bindings::squall::automation::types::Context;
use crate::host::HostState;
use crate::{ActionComponent, Sandbox};

impl Sandbox {
    /// Instantiate `component` and call `run` once for `pack.action` with
    /// `params`, `n` times,
    /// with the least a host must do: an empty WASI context, no limits, no
    /// deadline callback, no output capture, no result parsing. Returns the
    /// time of each iteration, whole and of its instantiation alone.
    pub async fn raw_floor(
        &self,
        component: &ActionComponent,
        (pack, action): (&str, &str),
        params: &str,
        n: usize,
    ) -> FloorTimes {
        let ctx = Context {
            execution_id: "bench".into(),
            tenant: "default".into(),
            pack: pack.into(),
            action: action.into(),
            api_url: None,
            auth_token: None,
            trace_tag: None,
        };
        let mut times = FloorTimes {
            whole: Vec::with_capacity(n),
            instantiation: Vec::with_capacity(n),
        };
        for _ in 0..n {
            let t = Instant::now();
            let state = HostState::bare(usize::MAX);
            let mut store = Store::new(&self.engine.engine, state);
            store.set_epoch_deadline(u64::MAX / 2);
            let instance = component
                .pre
                .instantiate_async(&mut store)
                .await
                .expect("benchmark component instantiates");
            times.instantiation.push(t.elapsed());
            let out = instance
                .call_run(&mut store, &ctx, &params.to_owned())
                .await
                .expect("benchmark component runs");
            std::hint::black_box(out).ok();
            drop(store);
            times.whole.push(t.elapsed());
        }
        times
    }
}

/// What [`Sandbox::raw_floor`] measured, one entry per iteration.
#[derive(Debug)]
pub struct FloorTimes {
    /// Instantiate, call, drop.
    pub whole: Vec<Duration>,
    /// From the store's creation to the instance being ready.
    pub instantiation: Vec<Duration>,
}
