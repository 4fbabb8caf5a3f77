from pyro_vae.app.cli import console_main

# Guarded so that importing the module (Sphinx's autosummary does) does not run the CLI.
if __name__ == "__main__":
    console_main()
