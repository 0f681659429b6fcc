import Glibc

/// `CLOCK_REALTIME` in nanoseconds since the epoch: the unit `setClock`, `readClock` and
/// `shiftClock` carry, read the same way on both sides of the protocol.
public enum WallClock {
    /// The wall clock now.
    public static func nanoseconds() -> Int64 {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        return Int64(ts.tv_sec) * 1_000_000_000 + Int64(ts.tv_nsec)
    }
}
