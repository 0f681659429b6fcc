import CZstd
import StasisCore

/// A pair of zstd contexts (compression and decompression) reused across calls, which saves their
/// setup on every 4 KiB frame. Not Sendable on purpose: a context serves one thread at a time, so
/// each worker owns its own `Zstd`.
public final class Zstd {
    /// The default compression level: DESIGN.md measured level 1 3.5 % bigger and level 9 5 %
    /// smaller at a quarter of the speed.
    public static let defaultLevel = 3
    /// The largest frame content `decompress` accepts unless told otherwise (the seekable
    /// format's own limit).
    public static let defaultMaxContentSize = 1 << 30

    private let cctx: OpaquePointer
    private let dctx: OpaquePointer
    private var level: Int?

    /// Creates both contexts.
    public init() throws {
        guard let cctx = ZSTD_createCCtx() else {
            throw StasisError(.internalError, "cannot create a zstd compression context")
        }
        guard let dctx = ZSTD_createDCtx() else {
            ZSTD_freeCCtx(cctx)
            throw StasisError(.internalError, "cannot create a zstd decompression context")
        }
        self.cctx = cctx
        self.dctx = dctx
    }

    deinit {
        ZSTD_freeCCtx(cctx)
        ZSTD_freeDCtx(dctx)
    }

    /// The largest compressed size of `size` bytes.
    public static func compressBound(_ size: Int) -> Int { ZSTD_compressBound(size) }

    /// Whether `level` is a level this libzstd accepts.
    public static func isValidLevel(_ level: Int) -> Bool {
        level >= Int(ZSTD_minCLevel()) && level <= Int(ZSTD_maxCLevel()) && level != 0
    }

    /// Compresses `source` into one independent zstd frame that records its content size and
    /// carries a content checksum (so `zstd -t` checks it).
    ///
    /// With `prefix`, the frame is compressed against those bytes (a single-use raw dictionary,
    /// like `zstd --patch-from`): only what differs from them costs space, and decompressing it
    /// needs the same prefix.
    public func compress(_ source: UnsafeRawBufferPointer, level: Int = Zstd.defaultLevel,
                         prefix: UnsafeRawBufferPointer? = nil) throws -> [UInt8] {
        try configure(level: level)
        if let prefix {
            // A compression that failed half-way would leave the context mid-frame, where no prefix can be set.
            try Zstd.check(ZSTD_CCtx_reset(cctx, ZSTD_reset_session_only), "cannot reset a zstd context")
            try Zstd.check(ZSTD_CCtx_refPrefix(cctx, prefix.baseAddress, prefix.count), "cannot set a zstd prefix of \(prefix.count) bytes")
        }
        let bound = ZSTD_compressBound(source.count)
        return try [UInt8](unsafeUninitializedCapacity: bound) { buffer, count in
            let n = ZSTD_compress2(cctx, buffer.baseAddress, bound, source.baseAddress, source.count)
            count = 0
            try Zstd.check(n, "cannot compress \(source.count) bytes")
            count = n
        }
    }

    /// Compresses an array of bytes; see `compress(_:level:prefix:)`. A prefix that is the
    /// source itself is copied first: zstd ignores a prefix that overlaps its input.
    public func compress(_ source: [UInt8], level: Int = Zstd.defaultLevel, prefix: [UInt8]? = nil) throws -> [UInt8] {
        guard let prefix else { return try source.withUnsafeBytes { try compress($0, level: level) } }
        let separate = source.withUnsafeBytes { source in prefix.withUnsafeBytes { $0.baseAddress == source.baseAddress } }
            ? prefix.withUnsafeBytes { [UInt8]($0) } : prefix
        return try source.withUnsafeBytes { source in try separate.withUnsafeBytes { try compress(source, level: level, prefix: $0) } }
    }

    /// The content size a frame's header declares, or nil when it declares none or is not a frame.
    public static func declaredSize(_ frame: [UInt8]) -> Int? {
        guard let declared = frame.withUnsafeBytes({ try? contentSize($0) }), declared <= UInt64(Int.max) else { return nil }
        return Int(declared)
    }

    /// The content size a frame's header declares; `.corrupted` when `frame` does not start with
    /// a zstd frame header or the header declares no size.
    private static func contentSize(_ frame: UnsafeRawBufferPointer) throws -> UInt64 {
        let declared = ZSTD_getFrameContentSize(frame.baseAddress, frame.count)
        if declared == UInt64.max - 1 {  // ZSTD_CONTENTSIZE_ERROR
            throw StasisError(.corrupted, "not a zstd frame (\(frame.count) bytes)")
        }
        if declared == UInt64.max {  // ZSTD_CONTENTSIZE_UNKNOWN
            throw StasisError(.corrupted, "zstd frame does not declare its content size")
        }
        return declared
    }

    /// Decompresses one frame that must declare exactly `expectedSize` bytes of content and be
    /// exactly `frame.count` bytes long (no trailing data); anything else is `.corrupted`.
    public func decompress(_ frame: UnsafeRawBufferPointer, expectedSize: Int, maxSize: Int = Zstd.defaultMaxContentSize) throws -> [UInt8] {
        try Zstd.checkHeader(frame, expectedSize: expectedSize, maxSize: maxSize)
        return try [UInt8](unsafeUninitializedCapacity: expectedSize) { buffer, count in
            count = 0
            try decode(frame, into: UnsafeMutableRawBufferPointer(buffer), expectedSize: expectedSize)
            count = expectedSize
        }
    }

    /// Decompresses an array of bytes; see `decompress(_:expectedSize:maxSize:)`; `prefix` as it
    /// was given to `compress`.
    public func decompress(_ frame: [UInt8], expectedSize: Int, maxSize: Int = Zstd.defaultMaxContentSize,
                           prefix: [UInt8]? = nil) throws -> [UInt8] {
        try frame.withUnsafeBytes { frame in
            guard let prefix else { return try decompress(frame, expectedSize: expectedSize, maxSize: maxSize) }
            // Checked before the allocation, as without a prefix.
            try Zstd.checkHeader(frame, expectedSize: expectedSize, maxSize: maxSize)
            return try prefix.withUnsafeBytes { prefix in
                try [UInt8](unsafeUninitializedCapacity: expectedSize) { buffer, count in
                    count = 0
                    try decompress(frame, expectedSize: expectedSize, into: UnsafeMutableRawBufferPointer(buffer), prefix: prefix)
                    count = expectedSize
                }
            }
        }
    }

    /// Decompresses one frame into the first `expectedSize` bytes of `destination`, with the
    /// checks of `decompress(_:expectedSize:maxSize:)`; `prefix` as it was given to `compress`.
    public func decompress(_ frame: UnsafeRawBufferPointer, expectedSize: Int, into destination: UnsafeMutableRawBufferPointer,
                           prefix: UnsafeRawBufferPointer? = nil) throws {
        guard destination.count >= expectedSize else {
            throw StasisError(.invalidArgument, "a buffer of \(destination.count) bytes cannot hold \(expectedSize)")
        }
        try Zstd.checkHeader(frame, expectedSize: expectedSize, maxSize: destination.count)
        if let prefix {
            try Zstd.check(ZSTD_DCtx_refPrefix(dctx, prefix.baseAddress, prefix.count), "cannot set a zstd prefix of \(prefix.count) bytes")
        }
        try decode(frame, into: destination, expectedSize: expectedSize)
    }

    private func decode(_ frame: UnsafeRawBufferPointer, into destination: UnsafeMutableRawBufferPointer, expectedSize: Int) throws {
        let n = ZSTD_decompressDCtx(dctx, destination.baseAddress, expectedSize, frame.baseAddress, frame.count)
        try Zstd.check(n, "cannot decompress a frame of \(frame.count) bytes", code: .corrupted)
        guard n == expectedSize else {
            throw StasisError(.corrupted, "zstd frame gave \(n) bytes; its header declares \(expectedSize)")
        }
    }

    /// Whether `frame` carries a content checksum, which the decompressor checks on its own.
    public static func hasContentChecksum(_ frame: UnsafeRawBufferPointer) -> Bool {
        var header = ZSTD_frameHeader()
        return ZSTD_getFrameHeader(&header, frame.baseAddress, frame.count) == 0 && header.checksumFlag != 0
    }

    /// Refuses a frame before any allocation: its declared size must be the expected one, within
    /// the cap, within what a frame of its length can expand to, and the frame must end exactly at
    /// the end of the buffer.
    static func checkHeader(_ frame: UnsafeRawBufferPointer, expectedSize: Int, maxSize: Int) throws {
        guard expectedSize >= 0, expectedSize <= maxSize else {
            throw StasisError(.corrupted, "zstd frame of \(expectedSize) bytes exceeds the limit of \(maxSize)")
        }
        // Every zstd block takes at least 4 bytes (3-byte header, 1 RLE byte) and yields at most
        // 128 KiB, so no frame expands further than this; a larger claim is damage, not data.
        guard expectedSize <= frame.count / 4 * (128 << 10) + (128 << 10) else {
            throw StasisError(.corrupted, "a zstd frame of \(frame.count) bytes cannot hold \(expectedSize) bytes")
        }
        let declared = try contentSize(frame)
        guard declared == UInt64(expectedSize) else {
            throw StasisError(.corrupted, "zstd frame declares \(declared) bytes; expected \(expectedSize)")
        }
        let length = ZSTD_findFrameCompressedSize(frame.baseAddress, frame.count)
        try check(length, "zstd frame of \(frame.count) bytes is truncated or damaged", code: .corrupted)
        guard length == frame.count else {
            throw StasisError(.corrupted, "zstd frame is \(length) bytes, followed by \(frame.count - length) more")
        }
    }

    private func configure(level: Int) throws {
        guard level != self.level else { return }
        guard Zstd.isValidLevel(level) else {
            throw StasisError(.invalidArgument, "zstd level \(level) is outside \(ZSTD_minCLevel())…\(ZSTD_maxCLevel())")
        }
        // Parameters are sticky across ZSTD_compress2 calls, so they are set once per level.
        self.level = nil
        try Zstd.check(ZSTD_CCtx_reset(cctx, ZSTD_reset_session_and_parameters), "cannot reset a zstd context")
        try Zstd.check(ZSTD_CCtx_setParameter(cctx, ZSTD_c_compressionLevel, Int32(level)), "cannot set zstd level \(level)")
        try Zstd.check(ZSTD_CCtx_setParameter(cctx, ZSTD_c_checksumFlag, 1), "cannot enable zstd checksums")
        try Zstd.check(ZSTD_CCtx_setParameter(cctx, ZSTD_c_contentSizeFlag, 1), "cannot enable zstd content sizes")
        self.level = level
    }

    private static func check(_ result: Int, _ what: String, code: StasisError.Code = .internalError) throws {
        guard ZSTD_isError(result) != 0 else { return }
        throw StasisError(code, what + ": zstd: " + String(cString: ZSTD_getErrorName(result)))
    }
}
