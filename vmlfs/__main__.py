from vmlfs.cli.main import main

main()
