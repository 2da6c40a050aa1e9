//! Just enough of the zip format for a Lambda deployment package: one stored (not
//! compressed) file with Unix permissions, so `bootstrap` stays executable.

pub fn store_one(name: &str, data: &[u8], mode: u32) -> Vec<u8> {
    let crc = crc32(data);
    let size = u32::try_from(data.len()).expect("a deployment package under 4 GiB");
    let name_len = u16::try_from(name.len()).expect("a short file name");
    let mut out = Vec::with_capacity(data.len() + 128);

    let local_header_offset = 0u32;
    out.extend_from_slice(&0x0403_4b50u32.to_le_bytes());
    out.extend_from_slice(&20u16.to_le_bytes()); // version needed
    out.extend_from_slice(&0u16.to_le_bytes()); // flags
    out.extend_from_slice(&0u16.to_le_bytes()); // method: stored
    out.extend_from_slice(&[0, 0, 0x21, 0]); // time 00:00, date 1980-01-01
    out.extend_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(&size.to_le_bytes());
    out.extend_from_slice(&size.to_le_bytes());
    out.extend_from_slice(&name_len.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(data);

    let central_offset = u32::try_from(out.len()).expect("under 4 GiB");
    out.extend_from_slice(&0x0201_4b50u32.to_le_bytes());
    out.extend_from_slice(&((3u16 << 8) | 20).to_le_bytes()); // made by Unix, so the mode counts
    out.extend_from_slice(&20u16.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    out.extend_from_slice(&[0, 0, 0x21, 0]);
    out.extend_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(&size.to_le_bytes());
    out.extend_from_slice(&size.to_le_bytes());
    out.extend_from_slice(&name_len.to_le_bytes());
    out.extend_from_slice(&[0; 8]); // extra, comment, disk, internal attributes
    out.extend_from_slice(&((0o100_000 | mode) << 16).to_le_bytes());
    out.extend_from_slice(&local_header_offset.to_le_bytes());
    out.extend_from_slice(name.as_bytes());
    let central_size = u32::try_from(out.len()).expect("under 4 GiB") - central_offset;

    out.extend_from_slice(&0x0605_4b50u32.to_le_bytes());
    out.extend_from_slice(&[0; 4]); // disk numbers
    out.extend_from_slice(&1u16.to_le_bytes());
    out.extend_from_slice(&1u16.to_le_bytes());
    out.extend_from_slice(&central_size.to_le_bytes());
    out.extend_from_slice(&central_offset.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    out
}

fn crc32(data: &[u8]) -> u32 {
    let table: Vec<u32> =
        (0..256u32).map(|n| (0..8).fold(n, |c, _| if c & 1 == 1 { 0xEDB8_8320 ^ (c >> 1) } else { c >> 1 })).collect();
    !data.iter().fold(!0u32, |crc, &b| table[((crc ^ u32::from(b)) & 0xFF) as usize] ^ (crc >> 8))
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_scratch_folder_is_gone_once_dropped() {
        let scratch = crate::Scratch::new("scratch");
        let path = scratch.path().to_path_buf();
        std::fs::write(path.join("f"), b"x").unwrap();
        drop(scratch);
        assert!(!path.exists(), "{} left behind", path.display());
    }

    #[test]
    fn crc32_matches_the_standard_check_value() {
        assert_eq!(super::crc32(b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn python_zipfile_reads_it_back_executable() {
        let dir = crate::Scratch::new("zip");
        let path = dir.path().join("f.zip");
        std::fs::write(&path, super::store_one("bootstrap", b"#!/bin/sh\n", 0o755)).unwrap();
        let out = std::process::Command::new("python3")
            .args(["-c", "import sys,zipfile; z=zipfile.ZipFile(sys.argv[1]); i=z.getinfo('bootstrap'); z.testzip(); print(oct(i.external_attr>>16), z.read('bootstrap').decode())"])
            .arg(&path)
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            "0o100755 #!/bin/sh",
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
