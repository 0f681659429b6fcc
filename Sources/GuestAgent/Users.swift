/// A guest account, as /etc/passwd describes it.
struct GuestUser {
    var uid: Int32
    var gid: Int32
    var home: String
    var name: String

    static let root = GuestUser(uid: 0, gid: 0, home: "/root", name: "root")

    /// Resolves `name`, `uid` or `uid:gid` against the guest's /etc/passwd.
    static func resolve(_ spec: String) -> GuestUser? {
        if spec.isEmpty { return lookup { $0.uid == 0 } ?? root }
        let parts = spec.split(separator: ":", maxSplits: 1).map(String.init)
        if let uid = Int32(parts[0]) {
            var user = lookup { $0.uid == uid } ?? GuestUser(uid: uid, gid: uid, home: "/", name: parts[0])
            if parts.count == 2 {
                guard let gid = Int32(parts[1]) else { return nil }
                user.gid = gid
            }
            return user
        }
        guard var user = lookup({ $0.name == parts[0] }) else { return nil }
        if parts.count == 2 {
            guard let gid = Int32(parts[1]) else { return nil }
            user.gid = gid
        }
        return user
    }

    private static func lookup(_ match: (GuestUser) -> Bool) -> GuestUser? {
        guard let text = POSIX.readText("/etc/passwd") else { return nil }
        for line in text.split(separator: "\n") {
            let f = line.split(separator: ":", omittingEmptySubsequences: false)
            guard f.count >= 6, let uid = Int32(f[2]), let gid = Int32(f[3]) else { continue }
            let user = GuestUser(uid: uid, gid: gid, home: f[5].isEmpty ? "/" : String(f[5]), name: String(f[0]))
            if match(user) { return user }
        }
        return nil
    }
}
