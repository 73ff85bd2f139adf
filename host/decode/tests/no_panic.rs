//! Nothing panics on any input, and the decoder state stays bounded.

mod build;

use build::*;
use proptest::prelude::*;
use wasmtap_decode::{Decoder, DecoderConfig, LinkType};

const LINKS: [LinkType; 9] = [
    LinkType::Ethernet,
    LinkType::LinuxSll,
    LinkType::LinuxSll2,
    LinkType::Nflog,
    LinkType::Null,
    LinkType::Loop,
    LinkType::Raw,
    LinkType::Ipv4,
    LinkType::Ipv6,
];

fn link() -> impl Strategy<Value = LinkType> {
    (0..LINKS.len()).prop_map(|i| LINKS[i])
}

/// Plausible frames to mutate: most random bytes die in the first header.
fn seeds() -> Vec<(LinkType, Vec<u8>)> {
    let t = tcp(1, 80, 5, 6, TCP_ACK, &[1, 1, 1, 1], b"payload!");
    let u = udp(1, 53, b"query");
    let v6 = ipv6(0, &cat(&[&ext8(60), &ext8(44), &frag6(6, 0, true, 3), &t]));
    let v6b = ipv6(44, &cat(&[&frag6(17, 8, false, 3), &u]));
    let v4f = ipv4_full(17, V4A, V4B, 9, (true, 0), &cat(&[&u, &[0; 3]]));
    let v4g = ipv4_full(17, V4A, V4B, 9, (false, 16), &u);
    let v4 = ipv4(6, &t);
    let ah = ipv4(51, &cat(&[&[6, 4, 0, 0], &[0; 20], &t]));
    vec![
        (LinkType::Ethernet, eth(0x0800, &v4)),
        (
            LinkType::Ethernet,
            eth(0x8100, &cat(&[&[0, 5, 0x86, 0xdd], &v6])),
        ),
        (
            LinkType::Ethernet,
            eth(0x88a8, &cat(&[&[0, 5, 0x81, 0], &[0, 6, 0x08, 0], &v4f])),
        ),
        (LinkType::Ethernet, eth(0x0800, &v4g)),
        (LinkType::LinuxSll, cat(&[&[0; 14], &[0x86, 0xdd], &v6b])),
        (LinkType::LinuxSll2, cat(&[&[0x08, 0], &[0; 18], &ah])),
        (
            LinkType::Nflog,
            cat(&[
                &[2, 0, 0, 0],
                &[8, 0, 1, 0, 8, 0, 0, 0],
                &((v4.len() + 4) as u16).to_le_bytes(),
                &[9, 0],
                &v4,
            ]),
        ),
        (LinkType::Null, cat(&[&30u32.to_le_bytes(), &v6])),
        (LinkType::Loop, cat(&[&2u32.to_be_bytes(), &v4f])),
        (LinkType::Raw, v6b.clone()),
        (LinkType::Ipv4, v4g),
        (LinkType::Ipv6, v6),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn random_bytes(link in link(), frame in proptest::collection::vec(any::<u8>(), 0..300), ts in any::<u64>()) {
        let mut d = Decoder::new(DecoderConfig::default());
        if let Ok(Some(p)) = d.decode(link, ts, &frame) {
            prop_assert!(p.payload.len() <= frame.len());
        }
        prop_assert_eq!(d.stats().packets, 1);
    }

    #[test]
    fn mutated_frames(
        ops in proptest::collection::vec((0usize..12, proptest::collection::vec((any::<u16>(), any::<u8>()), 0..6), any::<u16>(), 0u64..100_000), 1..40),
    ) {
        // One decoder through many frames, so fragment state carries over.
        let cfg = DecoderConfig { max_fragment_sets: 4, max_fragment_bytes: 4096, max_fragments_per_set: 8, fragment_timeout_ns: 50_000, tunnels: Default::default() };
        let mut d = Decoder::new(cfg.clone());
        let seeds = seeds();
        let mut ts = 0u64;
        for (which, flips, cut, dt) in ops {
            let (link, mut frame) = seeds[which % seeds.len()].clone();
            for (at, v) in flips {
                if !frame.is_empty() {
                    let i = at as usize % frame.len();
                    frame[i] = v;
                }
            }
            let keep = frame.len().saturating_sub(cut as usize % 8 * (cut as usize % 3));
            frame.truncate(keep);
            ts += dt;
            let _ = d.decode(link, ts, &frame);
            prop_assert!(d.fragment_sets() <= cfg.max_fragment_sets);
            prop_assert!(d.fragment_bytes() <= cfg.max_fragment_bytes);
        }
    }
}
