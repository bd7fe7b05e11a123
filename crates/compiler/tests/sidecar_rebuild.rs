//! A scope under a Sidecar, rebuilt after VirtualService changes, equals the scope compiled
//! anew: kept as it was for a change its Sidecar does not import, rebuilt for one it does.

use sextant_compiler::{Part, Rebuild, compile_part, recompile_part, scope};
use sextant_index::Object;
use sextant_synthetic::{W_M_S, index, sidecar, virtual_service};

#[test]
fn rebuilding_under_a_sidecar_equals_compiling_anew() {
    let mut index = index(&W_M_S);
    let (before, _) = index.publish();
    // A pod of svc-7 in ns-7, whose Sidecar imports ns-7, ns-8 and ns-9.
    let proxy = sidecar(&W_M_S, 7, 0);
    let scope = scope(&before, &proxy);
    let mut previous = compile_part(&before, &scope, Part::Outbound);
    // svc-50's VirtualService (ns-50, not imported), then svc-8's (ns-8, imported).
    for (s, imported) in [(50, false), (8, true)] {
        index.apply(Object::from_json(virtual_service(&W_M_S, s, 30), "default").expect("valid"));
        let (after, changes) = index.publish();
        assert_eq!(scope, sextant_compiler::scope(&after, &proxy));
        let rebuild = Rebuild {
            endpoints: changes.endpoints.clone(),
            routing: !changes.configs.is_empty(),
            virtual_service_hosts: changes.virtual_service_hosts.clone(),
        };
        let rebuilt = recompile_part(&after, &scope, Part::Outbound, &previous, &rebuild);
        let fresh = compile_part(&after, &scope, Part::Outbound);
        assert_eq!(rebuilt, fresh, "svc-{s}");
        assert_eq!(
            rebuilt == previous,
            !imported,
            "svc-{s}: kept only when not imported"
        );
        previous = rebuilt;
    }
}
