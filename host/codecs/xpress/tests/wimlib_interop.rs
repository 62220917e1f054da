//! Cross-checks against real wimlib (libwim.so.15, Debian package wimtools),
//! loaded at run time. These tests fail, rather than skip, without wimlib.

mod common;

use common::{file_corpus, generate, Rng, Wimlib, KINDS};
use wimguard_xpress::{decompress, XpressCompressor};

/// Both directions for one input: our chunk decodes with wimlib, and
/// wimlib's chunk decodes with ours, each bit-exactly.
fn cross_check(w: &Wimlib, ours: &mut XpressCompressor, input: &[u8], what: &str) -> (usize, usize) {
    let mut ours_out = Vec::new();
    let ours_len = if ours.compress_chunk(input, &mut ours_out) {
        let mut back = vec![0u8; input.len()];
        assert!(
            w.decompress(&ours_out, &mut back),
            "wimlib rejected our chunk ({what}, len {})",
            input.len()
        );
        assert!(
            back == input,
            "wimlib decoded our chunk wrongly ({what}, len {})",
            input.len()
        );
        ours_out.len()
    } else {
        input.len()
    };
    let theirs_len = match w.compress(input) {
        Some(c) => {
            let mut back = vec![0u8; input.len()];
            decompress(&c, &mut back)
                .unwrap_or_else(|e| panic!("we rejected wimlib's chunk ({what}, len {}): {e}", input.len()));
            assert!(
                back == input,
                "we decoded wimlib's chunk wrongly ({what}, len {})",
                input.len()
            );
            c.len()
        }
        None => input.len(),
    };
    (ours_len, theirs_len)
}

#[test]
fn generated_inputs_interoperate() {
    let w = Wimlib::load(65536, 0);
    let mut ours = XpressCompressor::new(65536);
    let mut rng = Rng::new(11);
    let mut lens: Vec<usize> = (0..=64).collect();
    lens.extend([
        255, 256, 257, 258, 259, 260, 300, 1000, 4096, 32767, 32768, 65535, 65536,
    ]);
    for &kind in KINDS {
        for &len in &lens {
            let input = generate(kind, len, &mut rng);
            cross_check(&w, &mut ours, &input, &format!("{kind:?}"));
        }
        for _ in 0..40 {
            let input = generate(kind, 1 + rng.below(65536), &mut rng);
            cross_check(&w, &mut ours, &input, &format!("{kind:?}"));
        }
    }
}

#[test]
fn real_files_interoperate_in_32k_and_64k_chunks() {
    let corpus = file_corpus(&["/usr/share/doc", "/usr/bin"], 6 << 20);
    assert!(corpus.len() > 1 << 20, "expected some system files to test with");
    for chunk in [32768usize, 65536] {
        let w = Wimlib::load(chunk, 0);
        let mut ours = XpressCompressor::new(chunk);
        let (mut a, mut b) = (0usize, 0usize);
        for piece in corpus.chunks(chunk) {
            let (x, y) = cross_check(&w, &mut ours, piece, "file corpus");
            a += x;
            b += y;
        }
        // Ratio sanity: we should be in wimlib's league (see examples/ratio).
        let ratio = a as f64 / b as f64;
        println!("chunk {chunk}: ours {a} wimlib {b} ratio {ratio:.4}");
        assert!(ratio < 1.05, "our output is {ratio:.3}x wimlib's");
    }
}

#[test]
fn every_wimlib_level_decodes() {
    // wimlib uses greedy, lazy and near-optimal parsers depending on level.
    let corpus = file_corpus(&["/usr/share/doc"], 1 << 20);
    let mut rng = Rng::new(12);
    for level in [1u32, 10, 35, 50, 80, 100] {
        let w = Wimlib::load(32768, level);
        let mut ours = XpressCompressor::new(32768);
        for piece in corpus.chunks(32768).take(16) {
            cross_check(&w, &mut ours, piece, &format!("level {level}"));
        }
        for &kind in KINDS {
            let input = generate(kind, 32768, &mut rng);
            cross_check(&w, &mut ours, &input, &format!("level {level} {kind:?}"));
        }
    }
}

#[test]
fn text_after_a_long_run_of_random_bytes_still_compresses() {
    // The parser searches a long run without matches ever more sparsely;
    // the text after it must still be found and coded, and the chunk must
    // still be valid for wimlib.
    let w = Wimlib::load(65536, 0);
    let mut ours = XpressCompressor::new(65536);
    let mut rng = Rng::new(13);
    for random_len in [600usize, 5000, 20000, 40000] {
        let mut input = generate(common::Kind::Random, random_len, &mut rng);
        let text = generate(common::Kind::Text, 65536 - random_len, &mut rng);
        input.extend_from_slice(&text);
        let (ours_len, theirs_len) = cross_check(&w, &mut ours, &input, "random then text");
        let mut text_alone = Vec::new();
        assert!(ours.compress_chunk(&text, &mut text_alone), "text alone must compress");
        // The random bytes cost a little over a byte each (they share the
        // chunk's literal codes with the text); the text about what it costs
        // alone. Text left uncoded would blow this budget by tens of KiB.
        let budget = random_len * 107 / 100 + text_alone.len() * 11 / 10 + 300;
        assert!(
            ours_len <= budget,
            "random {random_len} + text: {ours_len} bytes, over {budget} (wimlib: {theirs_len})"
        );
    }
}
