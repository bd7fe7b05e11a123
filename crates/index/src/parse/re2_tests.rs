use super::program_size;

/// RE2 program sizes Envoy 1.40 reported for these regexes (runtime
/// `re2.max_program_size.error_level: 1`, so that it reports every one).
const ENVOY: &[(&str, usize)] = &[
    ("a", 5),
    ("ab", 6),
    ("abc", 7),
    ("abcdefghij", 14),
    ("a$", 5),
    ("a|b", 5),
    ("ab|cd", 8),
    ("a|b|c", 5),
    ("a*", 5),
    ("a+", 6),
    ("a?", 6),
    ("(a)", 7),
    ("(?:a)", 5),
    ("a{3}", 7),
    ("a{2,4}", 10),
    ("a{0,3}", 10),
    ("[a-z]", 5),
    ("[a-z0-9]", 6),
    ("[a-zA-Z0-9_]", 7),
    (r"\d", 5),
    (r"\w", 7),
    (".", 6),
    (".+", 7),
    ("[^/]+", 7),
    ("/api/.*", 11),
    ("(?i)abc", 7),
    ("x{150}", 154),
    ("/x{150}", 155),
    (r"\b", 5),
    ("[^a]", 6),
    ("^/(a|b|c)/x$", 9),
    ("^/[^/]+/[^/]+$", 11),
    ("^/api/v[0-9]+/users/[^/]+/orders$", 23),
    ("/api/(users|orders|items)/[0-9]+", 30),
    ("^/(a|b|c|d|e|f|g|h)/x{10}$", 18),
    ("[a-z]{20}", 24),
    ("[a-z0-9]{5,30}", 89),
    ("^/v1/([a-z]+)/([0-9]{1,5})$", 20),
    ("(foo|bar)*baz", 15),
    ("(a*)*", 11),
    ("^[a-zA-Z0-9._-]+@[a-zA-Z0-9.-]+$", 12),
    (r"\.(jpg|png|gif)$", 16),
    ("x{90}", 94),
    ("x{95}", 99),
    ("x{96}", 100),
    ("x{97}", 101),
    ("^x{98}$", 100),
    ("[ab]{40}", 44),
    ("(ab){20,30}", 134),
    (".{30}", 64),
    ("/x{80}y{10}", 95),
    ("^", 2),
    ("$", 4),
    ("^a", 4),
    ("^abc", 4),
    ("^a$", 4),
    ("^abc$", 4),
    ("(?i)^/API/.*", 6),
    ("^a.*", 6),
    ("a.*", 7),
    (".*", 6),
    ("(?s).*", 6),
    ("(?s).", 5),
    ("^.*$", 4),
    ("x^abc", 9),
    ("b*", 5),
    ("(?U)a*", 5),
    ("é", 6),
    ("[^a-z]", 6),
    (".x", 7),
    ("x.", 7),
    ("/x{94}", 99),
    ("^/x{98}$", 102),
    ("[ab]{100}", 104),
    ("[ab]{96}", 100),
    ("[ab]{97}", 101),
    ("[a-z0-9]{5,36}", 107),
    ("^/api/(v1|v2|v3)/[a-z]{10}/[0-9]+/x{56}$", 79),
    ("^/api/(v1|v2|v3)/[a-z]{10}/[0-9]+/x{77}$", 100),
    ("^/api/(v1|v2|v3)/[a-z]{10}/[0-9]+/x{78}$", 101),
    ("(?i)^/api/(users|orders)/[a-z0-9]{5,24}$", 85),
    ("(?i)^/api/(users|orders)/[a-z0-9]{5,26}$", 91),
];

#[test]
fn perl_space_is_counted_as_re2_reads_it() {
    // RE2's \s is [\t\n\f\r ] (three ranges), not regex-syntax's, which also takes \v.
    let class = program_size(r"[\t\n\f\r\x20]{33}");
    assert_eq!(program_size(r"\s{33}"), class);
    assert!(
        class.expect("estimated") > 100,
        "Envoy refuses \\s{{33}}: {class:?}"
    );
    assert!(program_size(r"[\s]{40}").expect("estimated") > 100);
    assert!(program_size(r"[^\S]{40}").expect("estimated") > 100);
    // An escaped backslash before `s` is a backslash and a letter.
    assert_eq!(program_size(r"\\s"), program_size(r"\x5Cs"));
}

#[test]
fn hostile_repetition_is_not_estimated_past_the_bound() {
    assert_eq!(program_size("(x{1000}){1000}"), None);
    assert_eq!(program_size("[[:alpha:]]{1000}"), Some(1004));
}

#[test]
fn estimates_match_envoys_program_sizes() {
    let mut wrong = Vec::new();
    for (pattern, envoy) in ENVOY {
        let estimate = program_size(pattern);
        if estimate != Some(*envoy) {
            wrong.push(format!("{pattern}: estimated {estimate:?}, Envoy {envoy}"));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}
