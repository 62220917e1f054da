//! XML data parser on arbitrary UTF-16LE bytes.
#![no_main]
use libfuzzer_sys::fuzz_target;
use wimguard_wim::xml::WimXml;

fuzz_target!(|data: &[u8]| {
    if data.is_empty() {
        return;
    }
    let count = (data[0] % 4) as u32;
    if let Ok(x) = WimXml::parse(&data[1..], count) {
        let again = WimXml::parse(&x.to_bytes(), count).expect("our own output parses");
        assert_eq!(again.images(), x.images());
    }
});
