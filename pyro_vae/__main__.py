from pyro_vae.app.cli import console_main

console_main()
