//! On-demand virtual hosts (`serve --vhds`): each scope's outbound part as the delta proxies
//! that ask for VHDS see it ([`sextant_compiler::vhds`]), derived once per compiled part and
//! shared by the scope's proxies, with the index that answers their names.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, Weak},
};

use sextant_compiler::vhds::OnDemand;
use sextant_model::Proxy;
use sextant_resources::EncodedResources;
use sextant_xds::{ProxyResources, protocol::vhds::VirtualHosts};

use super::{XdsGenerator, scope_key};

/// `sextant serve`'s on-demand virtual hosts.
#[derive(Clone, Copy, Debug, clap::Args)]
pub struct VhdsArgs {
    /// Serve virtual hosts on demand (VHDS) to delta proxies whose node metadata sets
    /// `SEXTANT_VHDS: "true"` (`sextant bootstrap --vhds`): their route configurations start
    /// without virtual hosts, Envoy's `on_demand` filter fetches the one serving each new
    /// Host, and a VirtualService change sends one virtual host, to the proxies that hold it.
    /// A Host no service serves gets 404 from such proxies, whatever the outbound traffic
    /// policy.
    #[arg(long, env = "SEXTANT_VHDS")]
    pub vhds: bool,
}

/// The scopes' on-demand views by scope key, one lock each (the first proxy of a scope
/// derives its view, the others wait for it).
#[derive(Default)]
pub(super) struct Views {
    slots: Mutex<HashMap<String, Arc<Mutex<View>>>>,
}

/// A scope's on-demand view.
#[derive(Default)]
struct View {
    /// The compiled part it was derived from, to tell whether the view is current (weak: the
    /// view shares some of that part's resources, and is dropped with the next view made
    /// once the part is gone).
    source: Weak<EncodedResources>,
    derived: OnDemand,
    shared: Arc<EncodedResources>,
    hosts: Arc<VirtualHosts>,
}

impl XdsGenerator {
    /// `full` as a proxy served virtual hosts on demand sees it, its scope's view derived
    /// now unless it already was from the same part.
    pub(super) fn on_demand(
        &self,
        proxy: &Proxy,
        full: Arc<ProxyResources>,
    ) -> Arc<ProxyResources> {
        let slot = self.view_slot(proxy);
        let mut view = slot.lock().unwrap_or_else(|p| p.into_inner());
        if !std::ptr::eq(view.source.as_ptr(), Arc::as_ptr(&full.shared)) {
            let _turn = self.compiling.enter();
            let derived = sextant_compiler::vhds::on_demand(&full.shared, Some(&view.derived));
            *view = View {
                source: Arc::downgrade(&full.shared),
                shared: Arc::new(derived.resources.clone()),
                hosts: Arc::new(VirtualHosts::new(derived.virtual_hosts.clone())),
                derived,
            };
        }
        with_view(&view, full)
    }

    /// [`XdsGenerator::on_demand`] when the scope's view is derived already from `full`'s
    /// part (and nobody is deriving it).
    pub(super) fn cached_on_demand(
        &self,
        proxy: &Proxy,
        full: Arc<ProxyResources>,
    ) -> Option<Arc<ProxyResources>> {
        let slot = self.view_slot(proxy);
        let view = slot.try_lock().ok()?;
        std::ptr::eq(view.source.as_ptr(), Arc::as_ptr(&full.shared))
            .then(|| with_view(&view, full))
    }

    fn view_slot(&self, proxy: &Proxy) -> Arc<Mutex<View>> {
        let key = scope_key(&sextant_compiler::scope(&self.snapshot(), proxy));
        // As many views as compiled scopes (`--max-scopes`): a view holds parts of its
        // scope's compiled part, so it is bounded as that is.
        let max = self.scopes.lock().unwrap_or_else(|p| p.into_inner()).max;
        let mut slots = self.views.slots.lock().unwrap_or_else(|p| p.into_inner());
        if slots.len() >= max && !slots.contains_key(&key) {
            // Views of parts no scope holds any more go first.
            slots.retain(|_, v| v.try_lock().is_ok_and(|v| v.source.strong_count() > 0));
            if slots.len() >= max {
                slots.clear();
            }
        }
        slots.entry(key).or_default().clone()
    }
}

fn with_view(view: &View, full: Arc<ProxyResources>) -> Arc<ProxyResources> {
    Arc::new(ProxyResources {
        shared: view.shared.clone(),
        own: full.own.clone(),
        secrets: full.secrets.clone(),
        virtual_hosts: Some(view.hosts.clone()),
    })
}
