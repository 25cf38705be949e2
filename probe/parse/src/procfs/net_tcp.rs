//! `/proc/<pid>/net/tcp` and `tcp6`: which sockets listen on which port.
//! Any process can open sockets, so the table is the workload's as much as
//! the kernel's (thousands of lines in a busy network namespace).

/// Inodes of sockets in state LISTEN (`0A`) on one of `ports`, from the text
/// of `/proc/net/tcp` or `/proc/net/tcp6`.
pub fn parse_listening_inodes(table: &str, ports: &[u16]) -> Vec<u64> {
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // sl local rem st tx:rx tr:when retrnsmt uid timeout inode ...
            let local = fields.get(1)?;
            let state = fields.get(3)?;
            let inode = fields.get(9)?.parse::<u64>().ok()?;
            let port = u16::from_str_radix(local.rsplit(':').next()?, 16).ok()?;
            (*state == "0A" && ports.contains(&port) && inode != 0).then_some(inode)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const TCP: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4242 1 0000000000000000 100 0 0 10 0
   1: 0100007F:1F90 0100007F:C350 01 00000000:00000000 00:00000000 00000000     0        0 4343 1 0000000000000000 20 4 30 10 -1
   2: 0100007F:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4444 1 0000000000000000 100 0 0 10 0
";

    #[test]
    fn only_listening_sockets_on_wanted_ports_are_found() {
        assert_eq!(
            parse_listening_inodes(TCP, &[8080]),
            vec![4242],
            "established 8080 socket must be ignored"
        );
        assert_eq!(parse_listening_inodes(TCP, &[22, 8080]), vec![4242, 4444]);
        assert!(parse_listening_inodes(TCP, &[9999]).is_empty());
    }
}
