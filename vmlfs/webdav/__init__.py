"""The WebDAV server (and the logbook's web page): the mount's tree model behind HTTP.

``vmlfs serve`` builds a :class:`vmlfs.fs.state.MountState` exactly as
``vmlfs mount`` does and serves it through WsgiDAV on cheroot: the same
nodes, the same control files and jobs, only another way in. Nothing here
reads a store or a manifest directly.
"""
