import Foundation
import StasisCore
import Testing

@testable import Images

/// A throwaway STASIS_HOME and fixture builders for the image tests; fixtures are made at test time
/// by Python's tarfile (no committed binaries).
struct ImageFixture {
    let dir: URL
    let home: StasisHome
    let store: ImageStore

    init() throws {
        dir = FileManager.default.temporaryDirectory.appendingPathComponent("stasis-images-\(UUID().uuidString)", isDirectory: true)
        home = StasisHome(root: dir.appendingPathComponent("home", isDirectory: true))
        try home.prepare()
        store = ImageStore(home: home)
        try Data(Self.pythonHelper.utf8).write(to: dir.appendingPathComponent("fixtures.py"))
    }

    func cleanup() {
        try? RootfsExtractor.removeTree(at: dir)
    }

    func url(_ name: String) -> URL { dir.appendingPathComponent(name) }

    /// Runs the fixture script: `fixtures.py COMMAND ARGS…`.
    func make(_ arguments: String...) async throws {
        try await HostTool.run("python3", [dir.appendingPathComponent("fixtures.py").path] + arguments)
    }

    /// Runs one debugfs request against a disk and returns what it printed.
    func debugfs(_ disk: URL, _ request: String) async throws -> String {
        let out = try await HostTool.run(HostTool.which("debugfs") ?? "debugfs", ["-R", request, disk.path])
        return out.standardOutput
    }

    /// Copies an image's tree out with `debugfs rdump` and lists its paths (lost+found left out).
    func tree(of record: ImageRecord) async throws -> Set<String> {
        let out = url("dump-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: out, withIntermediateDirectories: true)
        _ = try await debugfs(record.diskURL(in: home), "rdump / \(out.path)")
        var paths: Set<String> = []
        let enumerator = FileManager.default.enumerator(atPath: out.path)
        while let path = enumerator?.nextObject() as? String {
            if !path.hasPrefix("lost+found") { paths.insert(path) }
        }
        return paths
    }

    /// e2fsck -fn: true if the filesystem is clean.
    func fsckClean(_ record: ImageRecord) async -> Bool {
        (try? await HostTool.run(HostTool.which("e2fsck") ?? "e2fsck", ["-fn", record.diskURL(in: home).path])) != nil
    }

    /// Whatever is left in the store's scratch and image folders.
    func leftovers() -> [String] {
        let fm = FileManager.default
        return ((try? fm.contentsOfDirectory(atPath: home.tmp.path)) ?? []).map { "tmp/\($0)" }
            + ((try? fm.contentsOfDirectory(atPath: home.images.path)) ?? []).map { "images/\($0)" }
    }

    static let pythonHelper = #"""
import gzip, hashlib, io, json, os, sys, tarfile

T = 1700000000

def info(name, kind=tarfile.REGTYPE, mode=0o644, uid=0, gid=0, data=b"", link=""):
    ti = tarfile.TarInfo(name)
    ti.type, ti.mode, ti.uid, ti.gid, ti.mtime, ti.linkname = kind, mode, uid, gid, T, link
    ti.size = len(data) if kind == tarfile.REGTYPE else 0
    return ti, (io.BytesIO(data) if kind == tarfile.REGTYPE else None)

def entries_tar(path, entries, fmt=tarfile.PAX_FORMAT):
    with tarfile.open(path, "w", format=fmt) as tf:
        for name, kw in entries:
            major, minor = kw.pop("major", 0), kw.pop("minor", 0)
            ti, f = info(name, **kw)
            ti.devmajor, ti.devminor = major, minor
            tf.addfile(ti, f)

def layer_bytes(entries):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, kw in entries:
            ti, f = info(name, **kw)
            tf.addfile(ti, f)
    return buf.getvalue()

D = dict(kind=tarfile.DIRTYPE, mode=0o755)
def F(data, **kw): return dict(data=data, **kw)

LAYER1 = [("etc", D), ("etc/a", F(b"A")), ("etc/b", F(b"B")), ("opq", D), ("opq/x", F(b"X")),
          ("opq/sub", D), ("opq/sub/y", F(b"Y")), ("keep", D), ("keep/k", F(b"K")),
          ("gone", D), ("gone/f", F(b"F"))]
# opq/new comes before the opaque marker: the marker must not remove what its own layer adds.
LAYER2 = [("opq", D), ("opq/new", F(b"NEW")), ("opq/.wh..wh..opq", F(b"")), ("etc/.wh.a", F(b"")),
          ("etc/c", F(b"C")), ("keep/k2", F(b"K2")), (".wh.gone", F(b""))]

def sha(b): return hashlib.sha256(b).hexdigest()

def rootfs(out, compression):
    long_dir = "usr/share/" + "/".join(["deep-folder-%02d" % i for i in range(12)])
    entries = [
        ("./", dict(kind=tarfile.DIRTYPE, mode=0o755)),
        ("./etc", D), ("./etc/hostname", F(b"stasis-test\n")),
        ("./etc/hostname2", dict(kind=tarfile.LNKTYPE, link="./etc/hostname")),
        ("./bin", D), ("./bin/tool", F(b"#!/bin/sh\n", mode=0o4755, uid=1000, gid=1000)),
        ("./usr", D), ("./usr/bin", D), ("./usr/bin/tool", dict(kind=tarfile.SYMTYPE, link="/bin/tool")),
        ("./lib", dict(kind=tarfile.SYMTYPE, link="usr/lib")),
        ("./dev", D), ("./dev/null", dict(kind=tarfile.CHRTYPE, mode=0o666, major=1, minor=3)),
        ("./dev/fifo", dict(kind=tarfile.FIFOTYPE, mode=0o600)),
        ("./root", dict(kind=tarfile.DIRTYPE, mode=0o700)),
        ("./" + long_dir + "/file.txt", F(b"deep\n")),
    ]
    entries_tar(out, entries)
    if compression:
        os.system("%s -q -f %s && mv %s.%s %s" % ("gzip" if compression == "gz" else "zstd --rm" if compression == "zst" else "xz", out, out, compression, out))

def evil(out, kind, canary):
    e = {
        "dotdot": [("../evil", F(b"x"))],
        "absolute": [("/abs", F(b"x"))],
        "symlink-escape": [("a", D), ("a/esc", dict(kind=tarfile.SYMTYPE, link="../../.."))],
        "symlink-parent": [("link", dict(kind=tarfile.SYMTYPE, link=canary)), ("link/passwd", F(b"root::0:0::/:/bin/sh\n"))],
        "hardlink-dotdot": [("x", F(b"x")), ("hl", dict(kind=tarfile.LNKTYPE, link="../x"))],
        "hardlink-via-symlink": [("ln", dict(kind=tarfile.SYMTYPE, link=canary)), ("hl2", dict(kind=tarfile.LNKTYPE, link="ln/secret"))],
    }[kind]
    entries_tar(out, [("etc", D), ("etc/ok", F(b"ok"))] + e)

def write_blob(layout, data):
    os.makedirs(os.path.join(layout, "blobs", "sha256"), exist_ok=True)
    with open(os.path.join(layout, "blobs", "sha256", sha(data)), "wb") as f:
        f.write(data)
    return sha(data)

def oci(layout, tar_out=None, corrupt=False):
    l1, l2 = layer_bytes(LAYER1), layer_bytes(LAYER2)
    l1gz = gzip.compress(l1, mtime=0)
    decoy = layer_bytes([("arm64-marker", F(b"arm"))])
    def manifest(layers, arch):
        config = json.dumps({"architecture": arch, "os": "linux", "rootfs": {"type": "layers", "diff_ids": ["sha256:" + sha(l) for l, _ in layers]}}).encode()
        m = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
             "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": "sha256:" + write_blob(layout, config), "size": len(config)},
             "layers": []}
        for raw, stored in layers:
            mt = "application/vnd.oci.image.layer.v1.tar" + ("+gzip" if stored is not raw else "")
            m["layers"].append({"mediaType": mt, "digest": "sha256:" + write_blob(layout, stored), "size": len(stored)})
        return json.dumps(m).encode()
    arm = manifest([(decoy, decoy)], "arm64")
    amd = manifest([(l1, l1gz), (l2, l2)], "amd64")
    nested = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": [
        {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": "sha256:" + write_blob(layout, arm), "size": len(arm), "platform": {"architecture": "arm64", "os": "linux"}},
        {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": "sha256:" + write_blob(layout, amd), "size": len(amd), "platform": {"architecture": "amd64", "os": "linux"}},
    ]}).encode()
    index = {"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.index.v1+json", "digest": "sha256:" + write_blob(layout, nested), "size": len(nested)}]}
    with open(os.path.join(layout, "index.json"), "w") as f: json.dump(index, f)
    with open(os.path.join(layout, "oci-layout"), "w") as f: json.dump({"imageLayoutVersion": "1.0.0"}, f)
    if corrupt:
        path = os.path.join(layout, "blobs", "sha256", sha(l2))
        data = bytearray(open(path, "rb").read()); data[600] ^= 1
        open(path, "wb").write(bytes(data))
    if tar_out:
        with tarfile.open(tar_out, "w") as tf:
            for name in sorted(os.listdir(layout)):
                tf.add(os.path.join(layout, name), arcname=name)

def docker(out, flavor):
    l1, l2 = layer_bytes(LAYER1), layer_bytes(LAYER2)
    config = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": ["sha256:" + sha(l1), "sha256:" + sha(l2)]}}).encode()
    files = {}
    if flavor == "legacy":
        layers = []
        for i, l in enumerate([l1, l2]):
            name = ("%064x" % (i + 1)) + "/layer.tar"
            files[name] = l
            files[("%064x" % (i + 1)) + "/VERSION"] = b"1.0"
            layers.append(name)
        files[sha(config) + ".json"] = config
        cfg = sha(config) + ".json"
    else:
        layers = ["blobs/sha256/" + sha(l) for l in (l1, l2)]
        for l in (l1, l2): files["blobs/sha256/" + sha(l)] = l
        files["blobs/sha256/" + sha(config)] = config
        cfg = "blobs/sha256/" + sha(config)
    files["manifest.json"] = json.dumps([{"Config": cfg, "RepoTags": ["test:latest"], "Layers": layers}]).encode()
    with tarfile.open(out, "w") as tf:
        dirs = set()
        for name in sorted(files):
            parts = name.split("/")
            for i in range(1, len(parts)):
                d = "/".join(parts[:i])
                if d not in dirs:
                    dirs.add(d); ti, _ = info(d, **D); tf.addfile(ti)
            ti, f = info(name, data=files[name])
            tf.addfile(ti, f)

def formats(out):
    long_name = "dir/" + "n" * 150 + "/file-with-a-long-name.txt"
    long_link = "/" + "t" * 120
    for fmt, suffix in ((tarfile.USTAR_FORMAT, "ustar"), (tarfile.PAX_FORMAT, "pax"), (tarfile.GNU_FORMAT, "gnu")):
        entries = [("short.txt", F(b"hello\n", mode=0o640, uid=1234, gid=99)),
                   ("dir", D), ("dir/sl", dict(kind=tarfile.SYMTYPE, link="../short.txt"))]
        if fmt != tarfile.USTAR_FORMAT:
            entries += [(long_name, F(b"long\n")), ("dir/longlink", dict(kind=tarfile.SYMTYPE, link=long_link))]
        entries_tar(os.path.join(out, suffix + ".tar"), entries, fmt)

def big(out):
    data = bytes((i * 7 + i // 4096) % 251 for i in range(3 * 1024 * 1024 + 123))
    with open(out + ".data", "wb") as f: f.write(data)
    entries_tar(out, [("big.bin", F(data)), ("after.txt", F(b"after\n"))])

def special(out, canary):
    entries_tar(out, [
        ("etc", D), ("etc/file", F(b"content\n", mode=0o4750, uid=1000, gid=1001)),
        ("etc/hard", dict(kind=tarfile.LNKTYPE, link="etc/file")),
        ("etc/sym", dict(kind=tarfile.SYMTYPE, link="file", uid=1000, gid=1000)),
        ("dev", D), ("dev/null", dict(kind=tarfile.CHRTYPE, mode=0o666, major=1, minor=3)),
        ("dev/sda", dict(kind=tarfile.BLKTYPE, mode=0o660, gid=6, major=8, minor=0)),
        ("dev/fifo", dict(kind=tarfile.FIFOTYPE, mode=0o620)),
        ("private", dict(kind=tarfile.DIRTYPE, mode=0o700, uid=1000, gid=1000)),
        ("private/x", F(b"x")),
        # A symlink to the canary, then a regular file of the same name: the file must replace
        # the symlink, never be written through it.
        ("trap", dict(kind=tarfile.SYMTYPE, link=canary + "/target")),
        ("trap", F(b"replaced\n")),
    ])

cmd = sys.argv[1]
if cmd == "rootfs": rootfs(sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else "")
elif cmd == "evil": evil(sys.argv[2], sys.argv[3], sys.argv[4])
elif cmd == "oci": oci(sys.argv[2], None)
elif cmd == "oci-tar": os.makedirs(sys.argv[2]); oci(sys.argv[2], sys.argv[3])
elif cmd == "oci-corrupt": oci(sys.argv[2], None, corrupt=True)
elif cmd == "docker": docker(sys.argv[2], sys.argv[3])
elif cmd == "formats": formats(sys.argv[2])
elif cmd == "big": big(sys.argv[2])
elif cmd == "special": special(sys.argv[2], sys.argv[3])
else: sys.exit("unknown command " + cmd)
"""#
}

/// The tree both layered fixtures (OCI and docker save) must produce.
let layeredTree: Set<String> = ["etc", "etc/b", "etc/c", "opq", "opq/new", "keep", "keep/k", "keep/k2"]

@Suite(.enabled(if: geteuid() == 0, "extraction sets owners and makes device nodes: run as root"))
struct ImageStoreTests {
    @Test func importsAFolder() async throws {
        let f = try ImageFixture()
        defer { f.cleanup() }
        let root = f.url("rootfs")
        try FileManager.default.createDirectory(at: root.appendingPathComponent("etc"), withIntermediateDirectories: true)
        try FileManager.default.createDirectory(at: root.appendingPathComponent("bin"), withIntermediateDirectories: true)
        try Data("stasis-dir\n".utf8).write(to: root.appendingPathComponent("etc/hostname"))
        try Data(repeating: 7, count: 5000).write(to: root.appendingPathComponent("bin/blob"))
        try FileManager.default.linkItem(at: root.appendingPathComponent("bin/blob"), to: root.appendingPathComponent("bin/blob2"))
        try FileManager.default.createSymbolicLink(atPath: root.appendingPathComponent("bin/sh").path, withDestinationPath: "/bin/dash")

        let messages = MessageLog()
        let record = try await f.store.importRootfs(name: "dir-image", from: root) { messages.append($0) }

        #expect(record.name == "dir-image")
        #expect(record.source == "dir:\(root.path)")
        #expect(record.disk == "rootfs.ext4")
        #expect(record.contentBytes == 11 + 5000) // the hard link counts once
        #expect(record.diskBytes == (1 << 30) + (1 << 20)) // 24 KiB of 4 KiB blocks + 1 GiB, rounded up to 1 MiB
        #expect(try await f.store.list() == [record])
        #expect(try await f.store.image(named: "dir-image") == record)
        #expect(!messages.all.isEmpty)

        let disk = record.diskURL(in: f.home)
        #expect(disk == f.home.images.appendingPathComponent("dir-image/rootfs.ext4"))
        var st = stat()
        #expect(stat(disk.path, &st) == 0)
        #expect(UInt64(st.st_size) == record.diskBytes)
        #expect(UInt64(st.st_blocks) * 512 < record.diskBytes / 4, "the disk should be sparse")
        #expect(await f.fsckClean(record))
        #expect(try await f.debugfs(disk, "cat /etc/hostname") == "stasis-dir\n")
        #expect(try await f.debugfs(disk, "stat /bin/blob").contains("Links: 2"))
        #expect(f.leftovers() == ["images/dir-image"])

        let saved = try AtomicFile.readJSON(ImageRecord.self, from: f.home.images.appendingPathComponent("dir-image/image.json"))
        #expect(saved == record)
    }

    @Test(arguments: ["", "gz", "zst", "xz"])
    func importsARootfsTarball(compression: String) async throws {
        let f = try ImageFixture()
        defer { f.cleanup() }
        // No telling extension: the format is found from the content.
        let archive = f.url("rootfs-archive")
        try await f.make("rootfs", archive.path, compression)
        let record = try await f.store.importRootfs(name: "tar-\(compression.isEmpty ? "plain" : compression)", from: archive) { _ in }
        #expect(record.source == "tar:\(archive.path)")
        #expect(await f.fsckClean(record))
        let disk = record.diskURL(in: f.home)
        #expect(try await f.debugfs(disk, "cat /etc/hostname") == "stasis-test\n")
        let tool = try await f.debugfs(disk, "stat /bin/tool")
        #expect(tool.contains("Mode:  04755"))
        #expect(tool.contains("User:  1000   Group:  1000"))
        #expect(try await f.debugfs(disk, "stat /etc/hostname").contains("Links: 2"))
        #expect(try await f.debugfs(disk, "stat /dev/null").contains("Device major/minor number: 01:03"))
        #expect(try await f.debugfs(disk, "stat /dev/fifo").contains("Type: FIFO"))
        #expect(try await f.debugfs(disk, "stat /root").contains("Mode:  0700"))
        #expect(try await f.debugfs(disk, "stat /lib").contains("Fast link dest: \"usr/lib\""))
        let deep = "/usr/share/" + (0 ..< 12).map { String(format: "deep-folder-%02d", $0) }.joined(separator: "/") + "/file.txt"
        #expect(try await f.debugfs(disk, "cat \(deep)") == "deep\n")
        #expect(f.leftovers() == ["images/\(record.name)"])
    }

    @Test(arguments: [
        ("dotdot", "../evil", "contains '..'"),
        ("absolute", "/abs", "is absolute"),
        ("symlink-escape", "a/esc", "climbs above the root"),
        ("symlink-parent", "link/passwd", "is a symlink"),
        ("hardlink-dotdot", "hl", "hard link target '../x'"),
        ("hardlink-via-symlink", "hl2", "is a symlink"),
    ])
    func refusesEntriesThatEscape(kind: String, entry: String, why: String) async throws {
        let f = try ImageFixture()
        defer { f.cleanup() }
        // Stands in for /etc: a broken extractor writes here, not into the host's real /etc.
        let canary = f.url("canary")
        try FileManager.default.createDirectory(at: canary, withIntermediateDirectories: true)
        try Data("secret\n".utf8).write(to: canary.appendingPathComponent("secret"))
        let archive = f.url("\(kind).tar")
        try await f.make("evil", archive.path, kind, canary.path)
        let absExisted = FileManager.default.fileExists(atPath: "/abs")

        let error = await #expect(throws: StasisError.self) {
            try await f.store.importRootfs(name: "evil", from: archive) { _ in }
        }
        #expect(error?.code == .invalidArgument)
        #expect(error?.message.contains("entry '\(entry)'") == true, "\(error?.message ?? "")")
        #expect(error?.message.contains("refused because") == true)
        #expect(error?.message.contains(why) == true, "\(error?.message ?? "")")
        #expect(try await f.store.list().isEmpty)
        #expect(f.leftovers().isEmpty)
        #expect(try FileManager.default.contentsOfDirectory(atPath: canary.path) == ["secret"])
        #expect(FileManager.default.fileExists(atPath: "/abs") == absExisted)
    }

    @Test(arguments: ["folder", "tar"])
    func appliesOCILayersWithWhiteouts(form: String) async throws {
        let f = try ImageFixture()
        defer { f.cleanup() }
        let layout = f.url("layout")
        let source: URL
        if form == "folder" {
            try FileManager.default.createDirectory(at: layout, withIntermediateDirectories: true)
            try await f.make("oci", layout.path)
            source = layout
        } else {
            source = f.url("image-archive")
            try await f.make("oci-tar", layout.path, source.path)
        }
        let record = try await f.store.importRootfs(name: "oci", from: source) { _ in }
        #expect(record.source == "oci:\(source.path)")
        #expect(await f.fsckClean(record))
        // arm64-marker would mean the wrong platform was picked from the nested index.
        #expect(try await f.tree(of: record) == layeredTree)
        #expect(try await f.debugfs(record.diskURL(in: f.home), "cat /opq/new") == "NEW")
        #expect(f.leftovers() == ["images/oci"])
    }

    @Test func refusesALayerThatDoesNotMatchItsDigest() async throws {
        let f = try ImageFixture()
        defer { f.cleanup() }
        let layout = f.url("layout")
        try FileManager.default.createDirectory(at: layout, withIntermediateDirectories: true)
        try await f.make("oci-corrupt", layout.path)
        let error = await #expect(throws: StasisError.self) {
            try await f.store.importRootfs(name: "oci", from: layout) { _ in }
        }
        #expect(error?.code == .corrupted)
        #expect(error?.message.contains("does not match its digest") == true, "\(error?.message ?? "")")
        #expect(f.leftovers().isEmpty)
    }

    @Test(arguments: ["legacy", "blobs"])
    func appliesDockerSaveLayersWithWhiteouts(flavor: String) async throws {
        let f = try ImageFixture()
        defer { f.cleanup() }
        let archive = f.url("saved.tar")
        try await f.make("docker", archive.path, flavor)
        let record = try await f.store.importRootfs(name: "docker", from: archive) { _ in }
        #expect(record.source == "docker-save:\(archive.path)")
        #expect(await f.fsckClean(record))
        #expect(try await f.tree(of: record) == layeredTree)
        #expect(f.leftovers() == ["images/docker"])
    }

    @Test func refusesANameInUse() async throws {
        let f = try ImageFixture()
        defer { f.cleanup() }
        let archive = f.url("rootfs.tar")
        try await f.make("rootfs", archive.path)
        let first = try await f.store.importRootfs(name: "taken", from: archive) { _ in }
        let error = await #expect(throws: StasisError.self) {
            try await f.store.importRootfs(name: "taken", from: archive) { _ in }
        }
        #expect(error?.code == .alreadyExists)
        #expect(error?.message.contains("'taken'") == true)
        #expect(try await f.store.list() == [first])
        #expect(f.leftovers() == ["images/taken"])
    }

    @Test(arguments: ["", "Upper", ".hidden", "-dash", "a/b", "..", "has space", String(repeating: "a", count: 64)])
    func refusesAnInvalidName(name: String) async throws {
        let f = try ImageFixture()
        defer { f.cleanup() }
        let error = await #expect(throws: StasisError.self) {
            try await f.store.importRootfs(name: name, from: f.dir) { _ in }
        }
        #expect(error?.code == .invalidArgument)
        #expect(error?.message.contains("invalid image name") == true)
        #expect(f.leftovers().isEmpty)
    }

    @Test func refusesAnEmptySource() async throws {
        let f = try ImageFixture()
        defer { f.cleanup() }
        let empty = f.url("empty")
        try FileManager.default.createDirectory(at: empty, withIntermediateDirectories: true)
        let error = await #expect(throws: StasisError.self) {
            try await f.store.importRootfs(name: "empty", from: empty) { _ in }
        }
        #expect(error?.message.contains("holds no files") == true)
        #expect(f.leftovers().isEmpty)
    }

    @Test func acceptsTheLongestValidName() throws {
        try ImageRecord.validateName("0" + String(repeating: "a.b_c-", count: 10) + "xy")
        try ImageRecord.validateName(String(repeating: "z", count: 63))
    }

    @Test func removesAnImage() async throws {
        let f = try ImageFixture()
        defer { f.cleanup() }
        let archive = f.url("rootfs.tar")
        try await f.make("rootfs", archive.path)
        _ = try await f.store.importRootfs(name: "b-image", from: archive) { _ in }
        let kept = try await f.store.importRootfs(name: "a-image", from: archive) { _ in }
        #expect(try await f.store.list().map(\.name) == ["a-image", "b-image"])

        try await f.store.remove(named: "b-image")
        #expect(try await f.store.list() == [kept])
        #expect(f.leftovers() == ["images/a-image"])

        let again = await #expect(throws: StasisError.self) { try await f.store.remove(named: "b-image") }
        #expect(again?.code == .notFound)
        let lookup = await #expect(throws: StasisError.self) { try await f.store.image(named: "b-image") }
        #expect(lookup?.code == .notFound)
        #expect(lookup?.message.contains("run `stasis images` to list them, or `stasis image build`") == true)
    }

    @Test func listSkipsHalfWrittenFolders() async throws {
        let f = try ImageFixture()
        defer { f.cleanup() }
        let fm = FileManager.default
        try fm.createDirectory(at: f.home.images.appendingPathComponent("no-metadata"), withIntermediateDirectories: true)
        try fm.createDirectory(at: f.home.images.appendingPathComponent(".hidden"), withIntermediateDirectories: true)
        let lostDisk = ImageRecord(name: "lost-disk", source: "dir:/x", diskBytes: 1, contentBytes: 1)
        try fm.createDirectory(at: lostDisk.folderURL(in: f.home), withIntermediateDirectories: true)
        try AtomicFile.writeJSON(lostDisk, to: lostDisk.folderURL(in: f.home).appendingPathComponent("image.json"))
        #expect(try await f.store.list().isEmpty)
        let error = await #expect(throws: StasisError.self) { try await f.store.image(named: "lost-disk") }
        #expect(error?.code == .corrupted)
    }

    @Test func cancellationLeavesAWholeImageOrNothing() async throws {
        let f = try ImageFixture()
        defer { f.cleanup() }
        let archive = f.url("big.tar")
        try await f.make("big", archive.path)
        for delay in [0, 1, 5, 20, 80] {
            let store = f.store
            let task = Task { try await store.importRootfs(name: "cancelled", from: archive) { _ in } }
            try await Task.sleep(for: .milliseconds(delay))
            task.cancel()
            let finished = (try? await task.value) != nil
            #expect(f.leftovers() == (finished ? ["images/cancelled"] : []), "after \(delay) ms")
            if finished { try await store.remove(named: "cancelled") }
            #expect(f.leftovers().isEmpty)
        }
    }

    /// Opt-in (needs Debian's mirror, ~30 s): STASIS_TEST_DEBIAN=1 swift test --filter buildsDebian
    @Test(.enabled(if: ProcessInfo.processInfo.environment["STASIS_TEST_DEBIAN"] != nil, "set STASIS_TEST_DEBIAN=1 to run mmdebstrap"))
    func buildsDebian() async throws {
        let f = try ImageFixture()
        defer { f.cleanup() }
        let clock = ContinuousClock()
        let start = clock.now
        let record = try await f.store.buildDebian(name: "bookworm", suite: "bookworm", packages: ["git", "python3"]) {
            print("  [\(clock.now - start)] \($0)")
        }
        print("buildDebian took \(clock.now - start): disk \(record.diskBytes) bytes, content \(record.contentBytes) bytes")
        var st = stat()
        _ = stat(record.diskURL(in: f.home).path, &st)
        print("disk blocks allocated: \(UInt64(st.st_blocks) * 512) bytes")
        #expect(record.source == "debian:bookworm +git,python3")
        #expect(await f.fsckClean(record))
        #expect(try await f.debugfs(record.diskURL(in: f.home), "cat /etc/debian_version").hasPrefix("12."))
        #expect(try await f.debugfs(record.diskURL(in: f.home), "stat /usr/bin/python3").contains("Type: symlink"))
        #expect(try await f.debugfs(record.diskURL(in: f.home), "stat /usr/bin/passwd").contains("Mode:  04755"))
        #expect(try await f.debugfs(record.diskURL(in: f.home), "stat /etc/shadow").contains("Group:    42"))
        #expect(f.leftovers() == ["images/bookworm"])
    }

    @Test func diskSizeFollowsTheRule() {
        let gib: UInt64 = 1 << 30
        #expect(ImageStore.diskSize(forFootprint: 0) == gib)
        #expect(ImageStore.diskSize(forFootprint: 1) == gib + (1 << 20))
        #expect(ImageStore.diskSize(forFootprint: 4 * gib) == 6 * gib)
    }
}

/// Collects progress messages from a `@Sendable` callback.
final class MessageLog: @unchecked Sendable {
    private let lock = NSLock()
    private var messages: [String] = []
    func append(_ message: String) { lock.withLock { messages.append(message) } }
    var all: [String] { lock.withLock { messages } }
}
