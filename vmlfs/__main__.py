from vmlfs.cli import main

main()
