import Foundation
import StasisCore

/// One root filesystem image in the store: `images/<name>/image.json` next to its ext4 disk.
public struct ImageRecord: Codable, Sendable, Equatable {
    /// The image's name, unique in the store (see `validateName`).
    public var name: String
    /// When the image was made (whole seconds, so that it survives the ISO 8601 round trip).
    public var created: Date
    /// Where it came from: "debian:bookworm +git,python3", "dir:/path", "tar:/x.tar", "oci:/path", "docker-save:/x.tar".
    public var source: String
    /// The disk's file name inside the image folder.
    public var disk: String
    /// The disk's virtual size in bytes (the file is sparse).
    public var diskBytes: UInt64
    /// The total size of the files in the root filesystem, each hard-linked file counted once.
    public var contentBytes: UInt64

    /// The file name every image's disk has.
    public static let diskFileName = "rootfs.ext4"
    /// The metadata file's name inside an image folder.
    public static let metadataFileName = "image.json"

    /// Makes a record; `created` is cut to whole seconds.
    public init(name: String, created: Date = Date(), source: String, disk: String = ImageRecord.diskFileName, diskBytes: UInt64, contentBytes: UInt64) {
        self.name = name
        self.created = Date(timeIntervalSince1970: created.timeIntervalSince1970.rounded(.down))
        self.source = source
        self.disk = disk
        self.diskBytes = diskBytes
        self.contentBytes = contentBytes
    }

    /// The image's folder: `home.images/<name>`.
    public func folderURL(in home: StasisHome) -> URL {
        home.images.appendingPathComponent(name, isDirectory: true)
    }

    /// The image's ext4 disk.
    public func diskURL(in home: StasisHome) -> URL {
        folderURL(in: home).appendingPathComponent(disk)
    }

    /// Throws `.invalidArgument` unless `name` matches `^[a-z0-9][a-z0-9._-]{0,62}$`.
    public static func validateName(_ name: String) throws {
        let bytes = Array(name.utf8)
        func allowed(_ b: UInt8, first: Bool) -> Bool {
            switch b {
            case UInt8(ascii: "a") ... UInt8(ascii: "z"), UInt8(ascii: "0") ... UInt8(ascii: "9"): return true
            case UInt8(ascii: "."), UInt8(ascii: "_"), UInt8(ascii: "-"): return !first
            default: return false
            }
        }
        let valid = (1 ... 63).contains(bytes.count)
            && bytes.enumerated().allSatisfy { allowed($0.element, first: $0.offset == 0) }
        guard valid else {
            throw StasisError(
                .invalidArgument,
                "invalid image name '\(name)': use 1 to 63 characters from a-z, 0-9, '.', '_' and '-', starting with a letter or digit")
        }
    }
}
