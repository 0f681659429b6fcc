import Foundation

/// Whether every byte is zero. memcmp against a zero page, not a Swift loop, so it stays fast in
/// debug builds too (archives run through hundreds of MiB of zeros).
func isAllZero(_ bytes: ArraySlice<UInt8>) -> Bool {
    bytes.withUnsafeBytes { raw in
        guard var base = raw.baseAddress else { return true }
        var left = raw.count
        return zeroPage.withUnsafeBytes { zero in
            guard let zeroBase = zero.baseAddress else { return false }
            while left > 0 {
                let n = min(left, zero.count)
                if memcmp(base, zeroBase, n) != 0 { return false }
                base += n
                left -= n
            }
            return true
        }
    }
}

private let zeroPage = [UInt8](repeating: 0, count: 64 * 1024)
