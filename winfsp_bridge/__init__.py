"""The WinFsp bridge: vmlfs's tree as a read-only Windows drive, over the same tree model as the mount.

* :mod:`winfsp_bridge.bridge`: the WinFsp operations as a pure translation
  layer over :class:`vmlfs.fs.state.MountState` (no winfspy, fully tested on
  Linux);
* :mod:`winfsp_bridge.names`, :mod:`winfsp_bridge.security`,
  :mod:`winfsp_bridge.ntstatus`: the three rules it applies (case-insensitive
  names, security descriptors, error codes);
* :mod:`winfsp_bridge.adapter`: the thin layer on winfspy, imported only on
  Windows (``python -m winfsp_bridge MOUNTPOINT``; docs/windows.md).
"""
