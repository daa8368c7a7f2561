import os, stat, gzip, sys
# Writes DIR/../initrd.gz, a gzipped newc cpio of DIR (no cpio binary here).
os.chdir(sys.argv[1])
out = gzip.open('../initrd.gz', 'wb', compresslevel=1)
ino = 1
def hdr(name, st, size, nlink=1, mode=None):
    global ino
    fields = [ino, mode if mode is not None else st.st_mode, 0, 0, nlink, int(st.st_mtime) if st else 0, size, 0, 0, 0, 0, len(name)+1, 0]
    ino += 1
    h = b'070701' + b''.join(b'%08X' % f for f in fields)
    data = h + name.encode() + b'\0'
    return data + b'\0' * ((4 - len(data) % 4) % 4)
for dirpath, dirnames, filenames in os.walk('.'):
    for n in sorted(dirnames) + sorted(filenames):
        p = os.path.join(dirpath, n)[2:]
        st = os.lstat(p)
        if stat.S_ISDIR(st.st_mode):
            out.write(hdr(p, st, 0, nlink=2))
        else:
            data = open(p, 'rb').read()
            out.write(hdr(p, st, len(data))); out.write(data); out.write(b'\0' * ((4 - len(data) % 4) % 4))
out.write(hdr('TRAILER!!!', None, 0, mode=0))
out.close()
